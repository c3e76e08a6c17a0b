/* test_scrub.c - mask (consistent tokens, restore), keyed hash, remove, and
 * the JSON walk over chat messages and batch inputs. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "scrub.h"

static char *scrub_str(gt_scrub_t *s, const char *in)
{
    char *out = NULL;
    CU_ASSERT_FATAL(gt_scrub_text(s, in, strlen(in), &out, NULL) == 0);
    return out;
}

static void test_mask_consistent_and_restore(void)
{
    gt_scrub_t *s = gt_scrub_new(&(gt_scrub_opts_t){.mode = GT_SCRUB_MASK});
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char *a = scrub_str(s, "mail ann@example.com or bob@example.com, again ann@example.com");
    TH_EQ_STR(a, "mail <EMAIL_1> or <EMAIL_2>, again <EMAIL_1>");
    /* Same scrubber, another string of the same request: same token. */
    char *b = scrub_str(s, "bob@example.com called +44 20 7946 0958");
    TH_EQ_STR(b, "<EMAIL_2> called <PHONE_1>");
    TH_EQ_INT(gt_scrub_count(s, GT_PII_EMAIL), 4);
    TH_EQ_INT(gt_scrub_count(s, GT_PII_PHONE), 1);
    TH_EQ_INT(gt_scrub_total(s), 5);
    json_t *counts = gt_scrub_counts(s);
    TH_EQ_INT(json_integer_value(json_object_get(counts, "email")), 4);
    CU_ASSERT_PTR_NULL(json_object_get(counts, "ssn"));
    json_decref(counts);

    const json_t *map = gt_scrub_mapping(s);
    TH_EQ_INT(json_object_size(map), 3);
    char *r = NULL;
    const char *model = "Dear <EMAIL_1>, <PHONE_1> is noted; <EMAIL_9> and <b> stay.";
    CU_ASSERT(gt_scrub_restore_text(map, model, strlen(model), &r, NULL) == 0);
    TH_EQ_STR(r, "Dear ann@example.com, +44 20 7946 0958 is noted; <EMAIL_9> and <b> stay.");
    free(a);
    free(b);
    free(r);
    gt_scrub_free(s);
}

static void test_hash_keyed(void)
{
    const unsigned char k1[] = "tenant-one-key", k2[] = "tenant-two-key";
    gt_scrub_t *s1 = gt_scrub_new(
        &(gt_scrub_opts_t){.mode = GT_SCRUB_HASH, .key = k1, .key_len = sizeof(k1) - 1});
    gt_scrub_t *s1b = gt_scrub_new(&(gt_scrub_opts_t){
        .mode = GT_SCRUB_HASH, .key = k1, .key_len = sizeof(k1) - 1, .hash_chars = 12});
    gt_scrub_t *s2 = gt_scrub_new(
        &(gt_scrub_opts_t){.mode = GT_SCRUB_HASH, .key = k2, .key_len = sizeof(k2) - 1});
    CU_ASSERT_PTR_NULL(gt_scrub_new(&(gt_scrub_opts_t){.mode = GT_SCRUB_HASH})); /* no key */
    char *a = scrub_str(s1, "ssn 078-05-1120");
    char *b = scrub_str(s1, "SSN: 078-05-1120!");
    char *c = scrub_str(s2, "ssn 078-05-1120");
    char *d = scrub_str(s1b, "ssn 078-05-1120");
    CU_ASSERT(strncmp(a, "ssn <SSN:", 9) == 0);
    TH_EQ_INT(strlen(a), strlen("ssn <SSN:>") + 16);
    TH_EQ_INT(strlen(d), strlen("ssn <SSN:>") + 12);
    CU_ASSERT(strstr(b, a + 4) != NULL); /* equal values match across requests */
    CU_ASSERT(strcmp(a, c) != 0);        /* keyed: another tenant cannot correlate */
    CU_ASSERT(strstr(a, "078") == NULL);
    CU_ASSERT_PTR_NULL(gt_scrub_mapping(s1));
    free(a);
    free(b);
    free(c);
    free(d);
    gt_scrub_free(s1);
    gt_scrub_free(s1b);
    gt_scrub_free(s2);
}

static void test_remove_and_types(void)
{
    gt_scrub_t *s = gt_scrub_new(&(gt_scrub_opts_t){.mode = GT_SCRUB_REMOVE});
    char *a = scrub_str(s, "ip 10.1.2.3, card 4111 1111 1111 1111.");
    TH_EQ_STR(a, "ip , card .");
    free(a);
    gt_scrub_free(s);
    s = gt_scrub_new(&(gt_scrub_opts_t){.mode = GT_SCRUB_MASK, .types = 1u << GT_PII_EMAIL});
    a = scrub_str(s, "ip 10.1.2.3 mail a@example.org");
    TH_EQ_STR(a, "ip 10.1.2.3 mail <EMAIL_1>");
    free(a);
    a = scrub_str(s, "");
    TH_EQ_STR(a, "");
    free(a);
    gt_scrub_free(s);
}

static void test_json_walk(void)
{
    json_t *in =
        json_loads("{\"messages\": [{\"role\": \"user\", \"content\": \"I am ann@example.com\"},"
                   "               {\"role\": \"user\", \"content\": [{\"type\": \"text\","
                   "                 \"text\": \"card 4111111111111111, mail ann@example.com\"}]}],"
                   " \"n\": 4111111111111111, \"ok\": true, \"none\": null, \"f\": 1.5,"
                   " \"ann@example.com\": \"keys stay\"}",
                   0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    gt_scrub_t *s = gt_scrub_new(&(gt_scrub_opts_t){.mode = GT_SCRUB_MASK});
    json_t *out = gt_scrub_json(s, in);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    json_t *msgs = json_object_get(out, "messages");
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "content")),
              "I am <EMAIL_1>");
    TH_EQ_STR(json_string_value(json_object_get(
                  json_array_get(json_object_get(json_array_get(msgs, 1), "content"), 0), "text")),
              "card <CARD_1>, mail <EMAIL_1>");
    TH_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "user");
    /* Non-strings are left alone (a number is not text the model reads as PII). */
    TH_EQ_INT(json_integer_value(json_object_get(out, "n")), 4111111111111111LL);
    CU_ASSERT(json_is_true(json_object_get(out, "ok")));
    CU_ASSERT(json_is_null(json_object_get(out, "none")));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(out, "ann@example.com"));
    /* The input is untouched; restore brings the original back. */
    CU_ASSERT(json_equal(json_object_get(in, "n"), json_object_get(out, "n")));
    json_t *back = gt_scrub_restore_json(gt_scrub_mapping(s), out);
    CU_ASSERT(json_equal(back, in));
    /* Batch inputs: one scrubber over all items keeps tokens consistent. */
    json_t *batch = json_pack("[s, s]", "a: 078-05-1120", "b: 078-05-1120");
    json_t *sb = gt_scrub_json(s, batch);
    TH_EQ_STR(json_string_value(json_array_get(sb, 0)), "a: <SSN_1>");
    TH_EQ_STR(json_string_value(json_array_get(sb, 1)), "b: <SSN_1>");
    json_decref(batch);
    json_decref(sb);
    json_decref(back);
    json_decref(out);
    json_decref(in);
    gt_scrub_free(s);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"mask: consistent tokens, counts, restore", test_mask_consistent_and_restore},
        {"hash: keyed, truncated, stable", test_hash_keyed},
        {"remove, type selection, empty text", test_remove_and_types},
        {"JSON walk: chat messages, batch, non-strings", test_json_walk},
        {NULL, NULL},
    };
    return th_run("scrub", tests);
}
