// A form generated from an agent's input schema (the JSON Schema subset agents use): strings,
// numbers, integers, booleans and enums get their own inputs; arrays, objects and anything else a
// JSON textarea. "Raw JSON" edits the whole task as text. read() returns the task or throws an
// Error naming the field.
import {h, json} from './dom.js';

function typeOf(schema) {
  let t = schema && schema.type;
  if (Array.isArray(t)) t = t.find((x) => x !== 'null') || 'null';
  if (!t && schema && schema.properties) t = 'object';
  return t;
}

function field(name, schema, required) {
  const id = `f-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const t = typeOf(schema);
  const title = [name, required ? ' *' : ''];
  const hint = schema && schema.description ? h('small', {class: 'muted'}, schema.description) : null;
  let input, read;
  if (schema && Array.isArray(schema.enum)) {
    input = h('select', {id, name},
      required ? null : h('option', {value: ''}, '(none)'),
      schema.enum.map((v, i) => h('option', {value: String(i)}, JSON.stringify(v))));
    if (schema.default !== undefined) {
      const i = schema.enum.findIndex((v) => JSON.stringify(v) === JSON.stringify(schema.default));
      if (i >= 0) input.value = String(i);
    }
    read = () => (input.value === '' ? undefined : schema.enum[Number(input.value)]);
  } else if (t === 'boolean') {
    input = h('input', {id, name, type: 'checkbox', checked: schema.default === true});
    read = () => input.checked;
  } else if (t === 'integer' || t === 'number') {
    input = h('input', {id, name, type: 'number', step: t === 'integer' ? '1' : 'any',
      min: schema.minimum, max: schema.maximum, value: schema.default !== undefined ? String(schema.default) : ''});
    read = () => {
      if (input.value.trim() === '') return undefined;
      const v = Number(input.value);
      if (!Number.isFinite(v) || (t === 'integer' && !Number.isInteger(v))) throw new Error(`${name}: not ${t === 'integer' ? 'an integer' : 'a number'}`);
      return v;
    };
  } else if (t === 'string') {
    const long = schema.maxLength > 200; // long texts get a textarea
    input = long
      ? h('textarea', {id, name, rows: 4, maxlength: schema.maxLength})
      : h('input', {id, name, type: 'text', maxlength: schema.maxLength});
    if (typeof schema.default === 'string') input.value = schema.default;
    read = () => (input.value === '' && !required ? undefined : input.value);
  } else {
    input = h('textarea', {id, name, rows: 3, class: 'mono', placeholder: t === 'array' ? '[ ]' : t === 'object' ? '{ }' : 'JSON'});
    if (schema && schema.default !== undefined) input.value = json(schema.default);
    read = () => {
      if (input.value.trim() === '') return undefined;
      try { return JSON.parse(input.value); } catch (e) { throw new Error(`${name}: not valid JSON (${e.message})`); }
    };
  }
  const label = t === 'boolean'
    ? h('label', {for: id, class: 'check'}, input, ' ', title)
    : h('label', {for: id}, title);
  const row = h('div', {class: 'field'}, label, t === 'boolean' ? null : input, hint);
  return {row, read, set: (v) => {
    if (v === undefined) return;
    if (input.type === 'checkbox') input.checked = v === true;
    else if (input.tagName === 'SELECT') input.value = String(schema.enum.findIndex((x) => JSON.stringify(x) === JSON.stringify(v)));
    else if (t === 'string' && typeof v === 'string') input.value = v;
    else input.value = typeof v === 'object' ? json(v) : String(v);
  }};
}

/** -> {element, read(), setRaw(bool)} */
export function buildForm(schema) {
  const t = typeOf(schema);
  const props = t === 'object' && schema.properties && typeof schema.properties === 'object' ? schema.properties : null;
  const required = new Set(Array.isArray(schema && schema.required) ? schema.required : []);
  const fields = props ? Object.keys(props).map((k) => [k, field(k, props[k], required.has(k))]) : [];
  const raw = h('textarea', {class: 'mono raw', rows: 6, name: '__raw', 'aria-label': 'Task as JSON'});
  const rawToggle = h('input', {type: 'checkbox', id: 'raw-toggle'});
  const fieldsBox = h('div', {class: 'fields'}, fields.map(([, f]) => f.row));
  const rawBox = h('div', {class: 'field'}, raw);

  const readFields = () => {
    const task = {};
    for (const [k, f] of fields) {
      const v = f.read();
      if (v !== undefined) task[k] = v;
    }
    return task;
  };
  const showRaw = (on) => {
    rawToggle.checked = on;
    fieldsBox.hidden = on;
    rawBox.hidden = !on;
  };
  rawToggle.addEventListener('change', () => {
    if (rawToggle.checked) {
      try { raw.value = json(readFields()); } catch (_) { raw.value = '{}'; }
    } else {
      try {
        const v = JSON.parse(raw.value);
        if (v && typeof v === 'object') for (const [k, f] of fields) f.set(v[k]);
      } catch (_) { /* keep the fields as they were */ }
    }
    showRaw(rawToggle.checked);
  });
  if (!props) {
    raw.value = t === 'array' ? '[]' : t === 'string' ? '""' : '{}';
    showRaw(true);
    rawToggle.disabled = true;
  } else {
    showRaw(false);
  }
  const element = h('div', {class: 'schema-form'}, fieldsBox, rawBox,
    h('label', {class: 'check small', for: 'raw-toggle'}, rawToggle, ' Raw JSON'));
  return {
    element,
    read() {
      if (rawToggle.checked) {
        try { return JSON.parse(raw.value); } catch (e) { throw new Error(`task: not valid JSON (${e.message})`); }
      }
      return readFields();
    },
  };
}
