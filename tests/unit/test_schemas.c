/* test_schemas.c - message schemas vs their examples, error messages, validator edge cases. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "schema.h"

/* The schemas embedded in libgantry (schemas/meson.build). */
static const char *const schema_names[] = {
    "request.v1", "task.v1",  "task-result.v1", "result.v1", "usage.v1",
    "dlq.v1",     "event.v1", "control.v1",     NULL,
};

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Validates each .json file in schemas/examples/<name>/<dir>; returns how many there were. */
static int check_examples(const gt_schema_t *s, const char *name, const char *dir, int want_valid)
{
    char rel[256], path[1024], err[512];
    int count = 0;
    DIR *d;
    struct dirent *e;

    snprintf(rel, sizeof(rel), "schemas/examples/%s/%s", name, dir);
    d = opendir(th_src(rel));
    if (!d) {
        fprintf(stderr, "  %s: cannot open\n", th_src(rel));
        return 0;
    }
    while ((e = readdir(d))) {
        json_error_t jerr;
        if (!ends_with(e->d_name, ".json"))
            continue;
        snprintf(path, sizeof(path), "%s/%s", th_src(rel), e->d_name);
        json_t *x = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!x) {
            fprintf(stderr, "  %s: not JSON: %s\n", path, jerr.text);
            CU_FAIL("example is not JSON");
            continue;
        }
        count++;
        int valid = gt_schema_validate(s, x, err, sizeof(err)) == 0;
        if (valid != want_valid)
            fprintf(stderr, "  %s/%s/%s: expected %s, got %s %s\n", name, dir, e->d_name,
                    want_valid ? "valid" : "invalid", valid ? "valid" : "invalid:", err);
        CU_ASSERT(valid == want_valid);
        /* An invalid example says why, in the "<pointer>: <reason>" form. */
        if (!valid)
            CU_ASSERT(err[0] && strstr(err, ": ") != NULL);
        json_decref(x);
    }
    closedir(d);
    return count;
}

static void test_examples(void)
{
    char file[64], err[512];
    for (size_t i = 0; schema_names[i]; i++) {
        snprintf(file, sizeof(file), "%s.json", schema_names[i]);
        gt_schema_t *s = gt_schema_embedded(file, err, sizeof(err));
        if (!s)
            fprintf(stderr, "  %s: %s\n", file, err);
        CU_ASSERT_FATAL(s != NULL);
        int nvalid = check_examples(s, schema_names[i], "valid", 1);
        int ninvalid = check_examples(s, schema_names[i], "invalid", 0);
        printf("  %-16s %2d valid, %2d invalid examples\n", schema_names[i], nvalid, ninvalid);
        CU_ASSERT(nvalid >= 2);
        CU_ASSERT(ninvalid >= 3);
        gt_schema_free(s);
    }
}

/* Loads the first valid example of a schema. */
static json_t *first_valid_example(const char *name)
{
    char rel[256], path[1024];
    json_t *x = NULL;
    struct dirent *e;
    snprintf(rel, sizeof(rel), "schemas/examples/%s/valid", name);
    DIR *d = opendir(th_src(rel));
    while (d && !x && (e = readdir(d))) {
        if (!ends_with(e->d_name, ".json"))
            continue;
        snprintf(path, sizeof(path), "%s/%s", th_src(rel), e->d_name);
        x = json_load_file(path, 0, NULL);
    }
    if (d)
        closedir(d);
    return x;
}

/* Each schema pins its own "schema" field: a valid message with another
 * version is refused with the expected value in the message. */
static void test_schema_field_const(void)
{
    char file[64], err[512], want[64];
    for (size_t i = 0; schema_names[i]; i++) {
        snprintf(file, sizeof(file), "%s.json", schema_names[i]);
        gt_schema_t *s = gt_schema_embedded(file, err, sizeof(err));
        json_t *x = first_valid_example(schema_names[i]);
        CU_ASSERT_FATAL(s != NULL && x != NULL);
        CU_ASSERT(gt_schema_validate(s, x, err, sizeof(err)) == 0);
        json_object_set_new(x, "schema", json_string("gantry.other.v9"));
        CU_ASSERT(gt_schema_validate(s, x, err, sizeof(err)) == -1);
        snprintf(want, sizeof(want), "/schema: must be \"gantry.%s\"", schema_names[i]);
        TH_EQ_STR(err, want);
        json_decref(x);
        gt_schema_free(s);
    }
}

/* Validates text against an embedded schema and returns the message ("" if valid). */
static const char *check_text(const char *file, const char *text)
{
    static char err[512];
    char cerr[512];
    json_error_t jerr;
    gt_schema_t *s = gt_schema_embedded(file, cerr, sizeof(cerr));
    json_t *x = json_loads(text, 0, &jerr);
    CU_ASSERT_FATAL(s != NULL);
    CU_ASSERT_FATAL(x != NULL);
    if (gt_schema_validate(s, x, err, sizeof(err)) == 0)
        err[0] = '\0';
    json_decref(x);
    gt_schema_free(s);
    return err;
}

/* Validates a request made of the base fields plus extra (",..." JSON members). */
static const char *check_req(const char *extra)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"request_id\": \"r1\", \"tenant_id\": \"t1\", \"model\": \"auto\"%s}", extra);
    return check_text("request.v1.json", text);
}

static void test_request_messages(void)
{
    TH_EQ_STR(check_req(", \"kind\": \"classify\", \"input\": \"x\""),
              "/kind: must be one of \"generate\", \"chat\", \"embed\"");
    TH_EQ_STR(check_text("request.v1.json", "{\"request_id\": \"r1\", \"kind\": \"generate\", "
                                            "\"model\": \"m\", \"input\": \"x\"}"),
              ": missing required property \"tenant_id\"");
    TH_EQ_STR(check_req(", \"kind\": \"chat\", \"input\": \"hello\""), "/input: must be object");
    TH_EQ_STR(
        check_req(", \"kind\": \"chat\", \"input\": "
                  "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}"),
        "/input/messages/0/role: must be one of \"system\", \"user\", \"assistant\", \"tool\"");
    TH_EQ_STR(check_req(", \"kind\": \"embed\", \"batch\": [\"a\", 1]"),
              "/batch/1: must be string or array");
    TH_EQ_STR(check_req(", \"kind\": \"generate\""),
              ": must match exactly one schema in oneOf, but matches none (#0: missing required "
              "property \"input\"; #1: missing required property \"batch\")");
    TH_EQ_STR(check_req(", \"kind\": \"generate\", \"input\": \"x\", \"batch\": [\"y\"]"),
              ": must match exactly one schema in oneOf, but matches #0 and #1");
    TH_EQ_STR(check_req(", \"kind\": \"generate\", \"input\": \"x\", \"prompt\": \"y\""),
              ": property \"prompt\" is not allowed");
    /* 1.0 is an integer. */
    TH_EQ_STR(check_req(", \"kind\": \"generate\", \"input\": \"x\", \"priority\": 1.0"), "");
    TH_EQ_STR(check_req(", \"kind\": \"generate\", \"input\": \"x\", \"deadline\": \"tomorrow\""),
              "/deadline: must be an RFC 3339 date-time (e.g. 2024-05-01T12:00:00Z)");
    TH_EQ_STR(check_req(", \"kind\": \"generate\", \"input\": \"x\", \"tenant_id\": \"\xc3\xa9\""),
              "/tenant_id: must match pattern \"^[A-Za-z0-9._:@-]+$\"");
}

/* Lengths count code points: 200 two-byte characters fit a 200-character model name. */
static void test_code_point_length(void)
{
    char model[512] = "", text[1024];
    for (int i = 0; i < 200; i++)
        strcat(model, "\xc3\xa9");
    snprintf(text, sizeof(text),
             "{\"request_id\": \"r1\", \"tenant_id\": \"t1\", \"kind\": "
             "\"generate\", \"model\": \"%s\", \"input\": \"x\"}",
             model);
    TH_EQ_STR(check_text("request.v1.json", text), "");
    strcat(model, "e");
    snprintf(text, sizeof(text),
             "{\"request_id\": \"r1\", \"tenant_id\": \"t1\", \"kind\": "
             "\"generate\", \"model\": \"%s\", \"input\": \"x\"}",
             model);
    TH_EQ_STR(check_text("request.v1.json", text), "/model: must be at most 200 characters long");
}

static void test_other_messages(void)
{
    TH_EQ_STR(
        check_text(
            "task-result.v1.json",
            "{\"schema\": \"gantry.task-result.v1\", \"task_id\": \"r/0\", \"request_id\": \"r\", "
            "\"tenant_id\": \"t\", \"index\": 0, \"status\": \"failed\"}"),
        ": missing required property \"error\"");
    TH_EQ_STR(
        check_text(
            "event.v1.json",
            "{\"schema\": \"gantry.event.v1\", \"event_id\": \"e\", \"type\": \"worker.stopped\", "
            "\"source\": \"worker-h-1\", \"at\": \"2026-12-31T23:59:60Z\", \"data\": {}}"),
        ""); /* a leap second at the end of the day */
    TH_EQ_STR(
        check_text(
            "dlq.v1.json",
            "{\"schema\": \"gantry.dlq.v1\", \"source\": {\"topic\": \"t\", \"partition\": 0, "
            "\"offset\": 1, \"extra\": 1}, \"stage\": \"intake.parse\", \"error\": {\"code\": "
            "\"invalid_json\", \"message\": \"m\"}, \"original\": \"\", \"failed_at\": "
            "\"2026-01-01T00:00:00Z\"}"),
        "/source: property \"extra\" is not allowed");
}

/* ---- validator edge cases not covered by the official suite ---- */

static int compile_fails(const char *schema, const char *want_substr)
{
    char err[512];
    json_error_t jerr;
    json_t *doc = json_loads(schema, 0, &jerr);
    CU_ASSERT_FATAL(doc != NULL);
    gt_schema_t *s = gt_schema_new(doc, err, sizeof(err));
    json_decref(doc);
    if (s || !strstr(err, want_substr))
        fprintf(stderr, "  %s: expected refusal with \"%s\", got %s\n", schema, want_substr,
                s ? "success" : err);
    gt_schema_free(s);
    return !s && strstr(err, want_substr) != NULL;
}

/* Returns 1 if valid, 0 if not, -1 if the schema does not compile. */
static int valid(const char *schema, const char *instance)
{
    char err[512];
    json_error_t jerr;
    json_t *doc = json_loads(schema, 0, &jerr);
    json_t *x = json_loads(instance, JSON_DECODE_ANY, &jerr);
    CU_ASSERT_FATAL(doc && x);
    gt_schema_t *s = gt_schema_new(doc, err, sizeof(err));
    int r = -1;
    if (!s)
        fprintf(stderr, "  %s: %s\n", schema, err);
    else
        r = gt_schema_validate(s, x, err, sizeof(err)) == 0;
    gt_schema_free(s);
    json_decref(doc);
    json_decref(x);
    return r;
}

/* Remote, relative, plain-name and dangling $refs are refused. */
static void test_refuses_remote_and_dangling_refs(void)
{
    CU_ASSERT(compile_fails("{\"$ref\": \"http://example.com/s.json\"}", "remote"));
    CU_ASSERT(compile_fails("{\"$ref\": \"other.json#/x\"}", "remote"));
    CU_ASSERT(compile_fails("{\"$ref\": \"#foo\"}", "plain-name"));
    CU_ASSERT(compile_fails("{\"$ref\": \"#/definitions/none\"}", "points to nothing"));
}

/* A typo or a later draft's keyword is refused with its location. */
static void test_refuses_unknown_keywords(void)
{
    CU_ASSERT(
        compile_fails("{\"requried\": [\"a\"]}", "unknown or unsupported keyword \"requried\""));
    CU_ASSERT(
        compile_fails("{\"properties\": {\"a\": {\"unevaluatedProperties\": false}}}",
                      "#/properties/a: unknown or unsupported keyword \"unevaluatedProperties\""));
}

/* A $id below the root and a $schema other than draft-07 are refused. */
static void test_refuses_ids_and_other_drafts(void)
{
    CU_ASSERT(compile_fails("{\"items\": {\"$id\": \"x\"}}", "$id"));
    CU_ASSERT(compile_fails("{\"$schema\": \"https://json-schema.org/draft/2020-12/schema\"}",
                            "draft-07"));
}

/* Malformed keyword values, a bad pattern, a $ref cycle, a non-schema root. */
static void test_refuses_malformed_values(void)
{
    CU_ASSERT(compile_fails("{\"minLength\": -1}", "non-negative integer"));
    CU_ASSERT(compile_fails("{\"type\": \"str\"}", "type"));
    CU_ASSERT(compile_fails("{\"exclusiveMinimum\": true}", "draft 4"));
    CU_ASSERT(compile_fails("{\"multipleOf\": 0}", "greater than 0"));
    CU_ASSERT(compile_fails("{\"pattern\": \"a(\"}", "pattern"));
    CU_ASSERT(compile_fails("{\"definitions\": {\"a\": {\"$ref\": \"#/definitions/b\"}, "
                            "\"b\": {\"$ref\": \"#/definitions/a\"}}}",
                            "cycle"));
    CU_ASSERT(compile_fails("[]", "object or a boolean"));
}

/* A container a $ref points into is no unknown keyword; the root $id names the document. */
static void test_accepts_ref_containers_and_root_id(void)
{
    /* A container that a $ref points into is not an unknown keyword. */
    CU_ASSERT(valid("{\"$defs\": {\"a\": {\"type\": \"string\"}}, \"$ref\": \"#/$defs/a\"}",
                    "\"x\"") == 1);
    /* The root $id names this document. */
    CU_ASSERT(valid("{\"$id\": \"https://x.test/s.json\", \"definitions\": {\"a\": {\"type\": "
                    "\"string\"}}, "
                    "\"items\": {\"$ref\": \"https://x.test/s.json#/definitions/a\"}}",
                    "[\"x\", 1]") == 0);
}

/* ECMAScript escapes and classes: \d \w \s, \uXXXX \xHH, escaped "]" and "/", lazy (?:...). */
static void test_pattern_escapes_and_classes(void)
{
    CU_ASSERT(valid("{\"pattern\": \"^\\\\d{3}-\\\\w+$\"}", "\"123-ab_c\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^\\\\d{3}$\"}", "\"12a\"") == 0);
    CU_ASSERT(valid("{\"pattern\": \"^[\\\\d\\\\-]+$\"}", "\"1-2\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^[\\\\]a]+$\"}", "\"]a]\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^\\\\S+\\\\s\\\\S+$\"}", "\"a b\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^(?:ab)+?$\"}", "\"abab\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^\\\\u0041\\\\x42\\\\.$\"}", "\"AB.\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^\\\\u0041\\\\x42\\\\.$\"}", "\"ABx\"") == 0);
    CU_ASSERT(valid("{\"pattern\": \"a/b\"}", "\"xa/b\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^a\\\\/b$\"}", "\"a/b\"") == 1);
}

/* PCRE2 reads ECMAScript's lookaround, backreferences and named groups. */
static void test_pattern_lookaround_and_backrefs(void)
{
    CU_ASSERT(valid("{\"pattern\": \"^(?=a)\\\\w+$\"}", "\"ab\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^(?!a)\\\\w+$\"}", "\"ab\"") == 0);
    CU_ASSERT(valid("{\"pattern\": \"^(a)\\\\1$\"}", "\"aa\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^(?<x>b)\\\\k<x>$\"}", "\"bb\"") == 1);
}

/* "." is one character and no line terminator; "$" is the end; "[]" and "[^]". */
static void test_pattern_dot_and_anchors(void)
{
    CU_ASSERT(valid("{\"pattern\": \"^.$\"}", "\"\\u00e9\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"^a.b$\"}", "\"a\\nb\"") == 0);
    CU_ASSERT(valid("{\"pattern\": \"^a$\"}", "\"a\\n\"") == 0);
    CU_ASSERT(valid("{\"pattern\": \"^[^]$\"}", "\"x\"") == 1);
    CU_ASSERT(valid("{\"pattern\": \"[]\"}", "\"x\"") == 0);
}

/* Numbers compare by value (1 == 1.0); multipleOf is decimal-exact; big integers stay exact. */
static void test_numbers_compare_by_value(void)
{
    CU_ASSERT(valid("{\"const\": 1}", "1.0") == 1);
    CU_ASSERT(valid("{\"enum\": [[1, {\"a\": 2.0}]]}", "[1.0, {\"a\": 2}]") == 1);
    CU_ASSERT(valid("{\"uniqueItems\": true}", "[1, 1.0]") == 0);
    CU_ASSERT(valid("{\"multipleOf\": 0.01}", "19.99") == 1);
    CU_ASSERT(valid("{\"multipleOf\": 0.01}", "19.999") == 0);
    CU_ASSERT(valid("{\"maximum\": 9007199254740993}", "9007199254740992") == 1);
}

/* minLength/maxLength count code points, not bytes. */
static void test_lengths_in_code_points(void)
{
    CU_ASSERT(valid("{\"maxLength\": 2}", "\"\xf0\x9f\x98\x80\xc3\xa9\"") == 1); /* emoji + é */
    CU_ASSERT(valid("{\"minLength\": 3}", "\"\xf0\x9f\x98\x80\xc3\xa9\"") == 0);
}

/* format date-time is RFC 3339, calendar- and leap-second-checked. */
static void test_format_date_time(void)
{
    CU_ASSERT(valid("{\"format\": \"date-time\"}", "\"2024-02-29T00:00:00+01:00\"") == 1);
    CU_ASSERT(valid("{\"format\": \"date-time\"}", "\"2023-02-29T00:00:00Z\"") == 0);
    CU_ASSERT(valid("{\"format\": \"date-time\"}", "\"2024-01-01T00:59:60+01:00\"") ==
              1); /* 23:59:60Z */
    CU_ASSERT(valid("{\"format\": \"date-time\"}", "\"2024-01-01T00:58:60+01:00\"") == 0);
    CU_ASSERT(valid("{\"format\": \"date-time\"}", "\"2024-01-01T00:59:59.+01:00\"") == 0);
}

/* Formats other than date-time are annotations. */
static void test_other_formats_are_annotations(void)
{
    CU_ASSERT(valid("{\"format\": \"email\"}", "\"not an email\"") == 1); /* annotation only */
}

static void test_recursion_guard(void)
{
    char err[512];
    json_error_t jerr;
    /* A $ref loop that consumes no instance ends with an error, not a crash. */
    json_t *doc = json_loads("{\"allOf\": [{\"$ref\": \"#\"}]}", 0, &jerr);
    gt_schema_t *s = gt_schema_new(doc, err, sizeof(err));
    CU_ASSERT_FATAL(s != NULL);
    json_t *one = json_integer(1);
    CU_ASSERT(gt_schema_validate(s, one, err, sizeof(err)) == -1);
    json_decref(one);
    CU_ASSERT(strstr(err, "recursion") != NULL);
    /* Inside "not" the guard must not turn into a success. */
    gt_schema_free(s);
    json_decref(doc);
    doc = json_loads("{\"definitions\": {\"l\": {\"allOf\": [{\"$ref\": \"#/definitions/l\"}]}}, "
                     "\"not\": {\"$ref\": \"#/definitions/l\"}}",
                     0, &jerr);
    s = gt_schema_new(doc, err, sizeof(err));
    CU_ASSERT_FATAL(s != NULL);
    CU_ASSERT(gt_schema_validate(s, json_null(), NULL, 0) == -1);
    gt_schema_free(s);
    json_decref(doc);
}

static void test_error_buffer(void)
{
    char err[8];
    json_error_t jerr;
    json_t *doc = json_loads("{\"required\": [\"a_long_property_name\"]}", 0, &jerr);
    gt_schema_t *s = gt_schema_new(doc, NULL, 0);
    json_t *x = json_object();
    CU_ASSERT_FATAL(s != NULL);
    CU_ASSERT(gt_schema_validate(s, x, NULL, 0) == -1);
    CU_ASSERT(gt_schema_validate(s, x, err, sizeof(err)) == -1);
    TH_EQ_STR(err, ": missi"); /* truncated, NUL-terminated */
    CU_ASSERT(gt_schema_embedded("nope.json", err, sizeof(err)) == NULL);
    gt_schema_free(s);
    json_decref(x);
    json_decref(doc);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"examples", test_examples},
        {"schema_field_const", test_schema_field_const},
        {"request_messages", test_request_messages},
        {"code_point_length", test_code_point_length},
        {"other_messages", test_other_messages},
        {"refuses remote and dangling refs", test_refuses_remote_and_dangling_refs},
        {"refuses unknown keywords", test_refuses_unknown_keywords},
        {"refuses $id below the root and other drafts", test_refuses_ids_and_other_drafts},
        {"refuses malformed keyword values", test_refuses_malformed_values},
        {"accepts $ref containers and the root $id", test_accepts_ref_containers_and_root_id},
        {"pattern: escapes and classes", test_pattern_escapes_and_classes},
        {"pattern: lookaround and backreferences", test_pattern_lookaround_and_backrefs},
        {"pattern: dot, anchors, empty classes", test_pattern_dot_and_anchors},
        {"numbers compare by value", test_numbers_compare_by_value},
        {"lengths count code points", test_lengths_in_code_points},
        {"format date-time", test_format_date_time},
        {"other formats are annotations", test_other_formats_are_annotations},
        {"recursion_guard", test_recursion_guard},
        {"error_buffer", test_error_buffer},
        {NULL, NULL},
    };
    return th_run("schemas", tests);
}
