/**
 * trace.h - W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` header.
 *
 * A request's trace context is "00-<trace id: 32 hex>-<span id: 16 hex>-<flags: 2 hex>" (55
 * characters). An incoming valid traceparent keeps its trace id and flags and gets a new span id
 * for this server's part; an absent or invalid one starts a new trace (flags 01). The context is
 * sent back as the reply's `traceparent` header, put into every log line of the request and of its
 * execution (`trace_id`), and each outgoing call (luagent.ai providers, luagent.http) carries the
 * same trace id with a new span id of its own. Pure functions: no allocation, no h2o.
 */
#ifndef LUAGENT_TRACE_H
#define LUAGENT_TRACE_H

#include <stddef.h>

#define LG_TRACEPARENT_LEN 55
#define LG_TRACE_ID_LEN 32

/** 1 when `v` is a valid traceparent value: version 2 lowercase hex other than "ff" (00: exactly
 *  55 characters; a later version: at least 55, and a '-' after the flags if longer), trace id 32
 *  lowercase hex not all zero, parent id 16 lowercase hex not all zero, flags 2 lowercase hex. */
int lg_trace_valid(const char *v, size_t len);
/** This server's context for a request whose traceparent header is `in` (NULL/invalid: a new
 *  trace). Writes LG_TRACEPARENT_LEN characters and a NUL into out. */
void lg_trace_start(const char *in, size_t len, char out[LG_TRACEPARENT_LEN + 1]);
/** The context of an outgoing call made under `parent` (a valid context): same trace id and
 *  flags, a new span id. */
void lg_trace_child(const char *parent, char out[LG_TRACEPARENT_LEN + 1]);

#endif
