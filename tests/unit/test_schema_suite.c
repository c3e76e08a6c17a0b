/* test_schema_suite.c - runs the official JSON-Schema-Test-Suite (draft 7) against lib/schema. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "schema.h"

/* Debian's json-schema-test-suite package; CI installs it. Overridable so a
 * newer checkout of the suite can be tried. */
#define SUITE_DEFAULT "/usr/share/json-schema-test-suite/tests/draft7"

/* Every file for a keyword we support. Not run, on purpose:
 * - refRemote.json: every case needs remote references (http://localhost:1234/...).
 * - optional/bignum.json: integers beyond 64 bits, which jansson refuses to parse.
 * - optional/ecmascript-regex.json and the other optional/format files: formats
 *   other than date-time are annotations only.
 * - optional/content.json: contentEncoding/contentMediaType are annotations. */
static const char *const suite_files[] = {
    "additionalItems.json",
    "additionalProperties.json",
    "allOf.json",
    "anyOf.json",
    "boolean_schema.json",
    "const.json",
    "contains.json",
    "default.json",
    "definitions.json",
    "dependencies.json",
    "enum.json",
    "exclusiveMaximum.json",
    "exclusiveMinimum.json",
    "if-then-else.json",
    "items.json",
    "maxItems.json",
    "maxLength.json",
    "maxProperties.json",
    "maximum.json",
    "minItems.json",
    "minLength.json",
    "minProperties.json",
    "minimum.json",
    "multipleOf.json",
    "not.json",
    "oneOf.json",
    "pattern.json",
    "patternProperties.json",
    "properties.json",
    "propertyNames.json",
    "ref.json",
    "required.json",
    "type.json",
    "uniqueItems.json",
    "optional/zeroTerminatedFloats.json",
    "optional/format/date-time.json",
    NULL,
};

/* Groups (by file and group description) whose schema needs what we refuse.
 * gt_schema_new must reject them with a message instead of validating wrongly. */
static const struct {
    const char *file, *group, *why;
} skipped_groups[] = {
    /* $ref to the draft-07 meta-schema by its URL. */
    {"ref.json", "remote ref, containing refs itself", "remote $ref"},
    {"definitions.json", "valid definition", "remote $ref (meta-schema)"},
    {"definitions.json", "invalid definition", "remote $ref (meta-schema)"},
    /* $id in a subschema changes the base URI; "$ref": "node" resolves against it. */
    {"ref.json", "Recursive references between schemas", "$id below the root"},
};

static const char *suite_dir(void)
{
    const char *d = getenv("GANTRY_JSON_SCHEMA_SUITE");
    return d && *d ? d : SUITE_DEFAULT;
}

static const char *skip_reason(const char *file, const char *group)
{
    for (size_t i = 0; i < sizeof(skipped_groups) / sizeof(skipped_groups[0]); i++)
        if (strcmp(skipped_groups[i].file, file) == 0 &&
            strcmp(skipped_groups[i].group, group) == 0)
            return skipped_groups[i].why;
    return NULL;
}

static int total_pass, total_fail, total_skip;

static void run_file(const char *file)
{
    char path[1024], err[512];
    json_error_t jerr;
    json_t *doc;
    int pass = 0, failed = 0, skip = 0;

    snprintf(path, sizeof(path), "%s/%s", suite_dir(), file);
    doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        fprintf(stderr, "  %s: cannot load: %s\n", path, jerr.text);
        CU_FAIL("suite file missing or unreadable");
        total_fail++;
        return;
    }
    for (size_t g = 0; g < json_array_size(doc); g++) {
        json_t *group = json_array_get(doc, g);
        const char *gdesc = json_string_value(json_object_get(group, "description"));
        json_t *tests = json_object_get(group, "tests");
        const char *why = skip_reason(file, gdesc ? gdesc : "");
        gt_schema_t *s = gt_schema_new(json_object_get(group, "schema"), err, sizeof(err));

        if (why) {
            /* Refused at compile time, with a reason: never validated wrongly. */
            if (s || !err[0]) {
                fprintf(stderr, "  %s: \"%s\" (%s) compiled but should be refused\n", file, gdesc,
                        why);
                failed++;
            }
            skip += (int)json_array_size(tests);
            gt_schema_free(s);
            continue;
        }
        if (!s) {
            fprintf(stderr, "  %s: \"%s\": schema refused: %s\n", file, gdesc, err);
            failed += (int)json_array_size(tests);
            continue;
        }
        for (size_t t = 0; t < json_array_size(tests); t++) {
            json_t *tc = json_array_get(tests, t);
            int want = json_is_true(json_object_get(tc, "valid"));
            int got = gt_schema_validate(s, json_object_get(tc, "data"), err, sizeof(err)) == 0;
            if (got == want) {
                pass++;
                /* An invalid instance always says why. */
                if (!got && !err[0]) {
                    fprintf(stderr, "  %s: \"%s\" / \"%s\": no error message\n", file, gdesc,
                            json_string_value(json_object_get(tc, "description")));
                    failed++;
                }
            } else {
                fprintf(stderr, "  %s: \"%s\" / \"%s\": expected %s, got %s (%s)\n", file, gdesc,
                        json_string_value(json_object_get(tc, "description")),
                        want ? "valid" : "invalid", got ? "valid" : "invalid", err);
                failed++;
            }
        }
        gt_schema_free(s);
    }
    json_decref(doc);
    printf("  %-36s %3d passed, %d failed, %d skipped\n", file, pass, failed, skip);
    total_pass += pass;
    total_fail += failed;
    total_skip += skip;
    TH_EQ_INT(failed, 0);
}

static void test_suite_present(void)
{
    struct stat st;
    /* A missing suite must fail the test, not pass it vacuously. */
    if (stat(suite_dir(), &st) != 0 || !S_ISDIR(st.st_mode))
        fprintf(stderr, "  %s: missing (install json-schema-test-suite)\n", suite_dir());
    CU_ASSERT_FATAL(stat(suite_dir(), &st) == 0 && S_ISDIR(st.st_mode));
}

static void test_suite_draft7(void)
{
    printf("\n");
    for (size_t i = 0; suite_files[i]; i++)
        run_file(suite_files[i]);
    printf("  total: %d passed, %d failed, %d skipped\n", total_pass, total_fail, total_skip);
    TH_EQ_INT(total_fail, 0);
    CU_ASSERT(total_pass > 400);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"suite_present", test_suite_present},
        {"suite_draft7", test_suite_draft7},
        {NULL, NULL},
    };
    return th_run("schema_suite", tests);
}
