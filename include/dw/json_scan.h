/*
 * Strict JSON (RFC 8259) in front of json-c: a byte check for what json-c
 * lets through (strict UTF-8 anywhere, no NUL byte, no raw control
 * character inside a string, outside strings only JSON's own characters,
 * numbers in RFC 8259's grammar), then json-c builds the tree with strict
 * flags. The reasons (why) name the byte offset, and no field: the caller
 * says which value it was ("value: " + why).
 */
#ifndef DW_JSON_SCAN_H
#define DW_JSON_SCAN_H

#include <stddef.h>

#include <json-c/json.h>

#include "dw/common.h"

/* The byte check alone. DW_OK, or DW_ERR_INVALID with the reason in why
 * (why may be NULL). The structure (brackets, commas, literals, escapes)
 * is left to the parser. */
enum dw_err dw_json_scan(const char *text, size_t len, char *why, size_t whylen) DW_MUST_CHECK;

/* One JSON text, strictly: the byte check, then json-c with nesting up to
 * depth_max, then nothing but white space. DW_OK with a new tree in *root
 * (one reference, the caller's), or DW_ERR_INVALID with *root NULL and
 * the reason in why. */
enum dw_err dw_json_parse(const char *text, size_t len, int depth_max, struct json_object **root,
                          char *why, size_t whylen) DW_MUST_CHECK;

#endif /* DW_JSON_SCAN_H */
