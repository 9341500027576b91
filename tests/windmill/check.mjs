// Checks windmill/ with Windmill's own CLI and parser (run.sh runs it; argv[2] is the sync folder):
//  - `wmill lint --json` passes and validates exactly the flows (NAME__flow/flow.yaml) and
//    schedules (*.schedule.yaml) found on disk, all valid (lint validates nothing and still passes
//    when it does not recognize the folder, so the count is what proves it looked);
//  - lint fails on a copy with one broken flow (it really validates);
//  - each script's NAME.script.yaml schema matches what Windmill infers from its `main`
//    (windmill-parser-wasm-py, the parser `wmill generate-metadata` uses): names, order, types,
//    required arguments;
//  - every flow step names an existing script (script path, or !inline file of a python3
//    rawscript) and gives each argument of its `main` without a default an input transform, and
//    no transform for an argument `main` does not have;
//  - every $res: reference names a resource file of the folder, of a resource type the folder
//    defines, and each schedule runs an existing flow with the arguments its schema requires.
// Prints "ok - ..." / "not ok - ..." per check and ends with "N passed, N failed".
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import initPy, { parse_python } from "windmill-parser-wasm-py";

const HERE = dirname(fileURLToPath(import.meta.url));
const SYNC = process.argv[2];
const WMILL = join(HERE, "node_modules", "windmill-cli", "esm", "main.js");
// windmill-cli declares no engines; on Node 18 it needs the Web Crypto global, which Node 19+ has
// by default (checked with Node 18.20.4, Debian 12's version: without the flag it stops at start).
const NODE_FLAGS = globalThis.crypto ? [] : ["--experimental-global-webcrypto"];
const require = createRequire(import.meta.url);
let passed = 0, failed = 0;

function check(ok, name, detail) {
  if (ok) { passed++; console.log(`ok - ${name}`); }
  else { failed++; console.log(`not ok - ${name}${detail ? `\n  ${String(detail).replace(/\n/g, "\n  ")}` : ""}`); }
}

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

// `wmill lint --json` in `dir` with a private config dir (no profile, no network needed)
function lint(dir) {
  const config = mkdtempSync(join(tmpdir(), "wmill-config-"));
  try {
    const out = execFileSync(process.execPath, [...NODE_FLAGS, WMILL, "lint", "--json", "--config-dir", config], {
      cwd: dir, encoding: "utf8", env: { ...process.env, HOME: config, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    return { code: 0, report: JSON.parse(out.slice(out.indexOf("{"))) };
  } catch (e) {
    if (e.stdout === undefined) throw e;
    const text = String(e.stdout);
    return { code: e.status, report: text.includes("{") ? JSON.parse(text.slice(text.indexOf("{"))) : null,
             text: text + String(e.stderr) };
  } finally {
    rmSync(config, { recursive: true, force: true });
  }
}

const files = walk(SYNC).map((p) => relative(SYNC, p));
const flows = files.filter((p) => /^f\/.*__flow\/flow\.yaml$/.test(p));
const schedules = files.filter((p) => /^f\/.*\.schedule\.yaml$/.test(p));
const scripts = files.filter((p) => /^f\/.*\.py$/.test(p) && !p.includes("__flow/"));
const yamlOf = (p) => YAML.parse(readFileSync(join(SYNC, p), "utf8"));

// ---- lint ----------------------------------------------------------------------------------
check(existsSync(join(SYNC, "wmill.yaml")), "wmill.yaml is at the root of the sync folder");
check(flows.length >= 3 && schedules.length >= 1, `the folder has flows (${flows.length}) and schedules (${schedules.length})`);
{
  const { code, report, text } = lint(SYNC);
  check(code === 0 && report?.success === true, "wmill lint passes", text ?? JSON.stringify(report));
  check(report?.validatedFiles === flows.length + schedules.length,
        `wmill lint validated ${report?.validatedFiles} files: every flow (${flows.length}) and schedule (${schedules.length})`,
        JSON.stringify(report));
  check(report?.validFiles === report?.validatedFiles && report?.issues?.length === 0 && report?.warnings?.length === 0,
        `all ${report?.validFiles} valid, no issues or warnings`, JSON.stringify(report));
}
{
  const copy = mkdtempSync(join(tmpdir(), "wmill-broken-"));
  try {
    cpSync(SYNC, copy, { recursive: true });
    const victim = join(copy, flows[0]);
    writeFileSync(victim, readFileSync(victim, "utf8").replace(/type: (script|branchall)/, "type: no_such_module_type"));
    const { code, report } = lint(copy);
    check(code !== 0 && report?.issues?.some((i) => i.path === flows[0]),
          `wmill lint fails on a copy whose ${flows[0]} has an unknown module type`, JSON.stringify(report));
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

// ---- scripts: metadata against Windmill's parser ---------------------------------------------
await initPy({ module_or_path: readFileSync(require.resolve("windmill-parser-wasm-py/windmill_parser_wasm_bg.wasm")) });
const sigOf = (file) => JSON.parse(parse_python(readFileSync(join(SYNC, file), "utf8")));

function jsonType(typ) {   // Windmill's argSigToJsonSchemaType, for the types these scripts use
  if (typ === "str" || typ?.str !== undefined) return { type: "string" };
  if (typ === "int") return { type: "integer" };
  if (typ === "float") return { type: "number" };
  if (typ === "bool") return { type: "boolean" };
  if (typ?.resource) return { type: "object", format: `resource-${typ.resource}` };
  if (typ?.object !== undefined) return { type: "object" };
  if (typ?.list !== undefined) return { type: "array" };
  return { unsupported: JSON.stringify(typ) };
}

const resourceTypes = new Set(files.filter((p) => p.endsWith(".resource-type.yaml")).map((p) => p.replace(".resource-type.yaml", "")));
for (const py of scripts) {
  const metaPath = py.replace(/\.py$/, ".script.yaml");
  if (!existsSync(join(SYNC, metaPath))) { check(false, `${metaPath} exists`); continue; }
  const meta = yamlOf(metaPath);
  const sig = sigOf(py);
  const names = sig.args.map((a) => a.name);
  const props = meta.schema?.properties ?? {};
  check(meta.kind === "script" && typeof meta.summary === "string" && meta.summary !== "" && "lock" in meta,
        `${metaPath}: kind, summary and lock`);
  check(JSON.stringify(meta.schema?.order) === JSON.stringify(names) && JSON.stringify(Object.keys(props)) === JSON.stringify(names),
        `${metaPath}: arguments ${names.join(", ")} in main's order`, `schema order ${meta.schema?.order}, props ${Object.keys(props)}`);
  const required = sig.args.filter((a) => !a.has_default).map((a) => a.name);
  check(JSON.stringify(meta.schema?.required) === JSON.stringify(required), `${metaPath}: required = ${required.join(", ")}`,
        `schema says ${meta.schema?.required}`);
  const wrong = sig.args.filter((a) => {
    const want = jsonType(a.typ), have = props[a.name] ?? {};
    return want.unsupported || have.type !== want.type || (want.format ?? null) !== (have.format ?? null) ||
      (a.has_default && JSON.stringify(have.default ?? null) !== JSON.stringify(a.default ?? null));
  });
  check(wrong.length === 0, `${metaPath}: types and defaults as Windmill infers them`,
        wrong.map((a) => `${a.name}: main says ${JSON.stringify(a.typ)} default ${JSON.stringify(a.default)}, schema ${JSON.stringify(props[a.name])}`).join("\n"));
  for (const a of sig.args.filter((a) => a.typ?.resource)) {
    check(resourceTypes.has(a.typ.resource), `${py}: resource type ${a.typ.resource} is defined (${a.typ.resource}.resource-type.yaml)`);
  }
}

// ---- flows: every step's script exists and gets its arguments ---------------------------------
function modulesOf(list) {
  return (list ?? []).flatMap((m) => [m, ...(m.value?.branches ?? []).flatMap((b) => modulesOf(b.modules)),
                                      ...modulesOf(m.value?.modules)]);
}
const resRefs = [];
function collectRefs(v) {
  if (typeof v === "string" && v.startsWith("$res:")) resRefs.push(v.slice(5));
  else if (v && typeof v === "object") Object.values(v).forEach(collectRefs);
}
for (const flowPath of flows) {
  const flow = yamlOf(flowPath);
  check(typeof flow.summary === "string" && flow.summary !== "" && flow.schema?.type === "object",
        `${flowPath}: summary and input schema`);
  for (const m of modulesOf(flow.value?.modules)) {
    const v = m.value;
    let file = null;
    if (v.type === "script") file = `${v.path}.py`;
    else if (v.type === "rawscript") {
      check(v.language === "python3" && /^!inline \S+$/.test(v.content), `${flowPath} ${m.id}: python3 rawscript with !inline content`);
      file = join(dirname(flowPath), v.content.replace(/^!inline /, ""));
    }
    if (file === null) continue;
    if (!existsSync(join(SYNC, file))) { check(false, `${flowPath} ${m.id}: ${file} exists`); continue; }
    const sig = sigOf(file);
    const given = Object.keys(v.input_transforms ?? {});
    const missing = sig.args.filter((a) => !a.has_default && !given.includes(a.name)).map((a) => a.name);
    const unknown = given.filter((g) => !sig.args.some((a) => a.name === g));
    check(missing.length === 0 && unknown.length === 0, `${flowPath} ${m.id}: input transforms fit ${file}'s main`,
          `missing ${missing}, unknown ${unknown}`);
    collectRefs(v.input_transforms);
  }
}
for (const s of schedules) {
  const sched = yamlOf(s);
  collectRefs(sched.args);
  const target = `${sched.script_path}${sched.is_flow ? "__flow/flow.yaml" : ".py"}`;
  check(files.includes(target), `${s}: runs ${target}, which exists`);
  if (sched.is_flow && files.includes(target)) {
    const req = yamlOf(target).schema?.required ?? [];
    check(req.every((k) => k in (sched.args ?? {})), `${s}: gives the flow's required inputs (${req.join(", ")})`);
  }
  check(sched.schedule.trim().split(/\s+/).length === 6, `${s}: six-field cron (seconds first)`);
}
for (const r of new Set(resRefs)) {
  const p = `${r}.resource.yaml`;
  check(files.includes(p) && resourceTypes.has(yamlOf(p).resource_type),
        `$res:${r} is ${p}, of a resource type the folder defines`);
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
