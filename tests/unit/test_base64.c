/* test_base64.c - base64 and base64url: the RFC 4648 vectors round trip, and
 * decoding is strict (bad length, alphabet, misplaced padding are refused). */
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "harness.h"

static const struct {
    const char *in, *std, *url;
} vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
    {"\xfb\xff\xbf", "+/+/", "-_-_"},
};
#define N_VECTORS (sizeof(vectors) / sizeof(vectors[0]))

static void test_std_encode(void)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        char *e = gt_base64_encode(vectors[i].in, strlen(vectors[i].in));
        TH_EQ_STR(e, vectors[i].std);
        free(e);
    }
}

static void test_std_decode(void)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        size_t n = 99;
        unsigned char *d = gt_base64_decode(vectors[i].std, &n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(d);
        TH_EQ_INT(n, strlen(vectors[i].in));
        TH_EQ_INT(memcmp(d, vectors[i].in, n), 0);
        free(d);
    }
}

static void test_std_decode_strict(void)
{
    static const char *bad[] = {"Zg=",  "Zg",    "Z===",   "Zm9v=Zm9", "Zm9-",
                                "Zm9_", " Zg==", "Zg==\n", "Zm=v",     "Zm9v\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char *d = gt_base64_decode(bad[i], NULL);
        if (d)
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
        CU_ASSERT_PTR_NULL_FATAL(d);
    }
}

static void test_url_encode(void)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        char *e = gt_base64url_encode((const unsigned char *)vectors[i].in, strlen(vectors[i].in));
        TH_EQ_STR(e, vectors[i].url);
        free(e);
    }
}

static void test_url_decode(void)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        unsigned char *d = NULL;
        size_t n = 99;
        TH_EQ_INT(gt_base64url_decode(vectors[i].url, strlen(vectors[i].url), &d, &n), 0);
        TH_EQ_INT(n, strlen(vectors[i].in));
        TH_EQ_INT(memcmp(d, vectors[i].in, n), 0);
        TH_EQ_INT(d[n], 0);
        free(d);
    }
    unsigned char *d = NULL;
    size_t n = 0;
    TH_EQ_INT(gt_base64url_decode("Zg==", 4, &d, &n), 0); /* padding is optional */
    TH_EQ_INT(n, 1);
    free(d);
}

static void test_url_decode_strict(void)
{
    unsigned char *d = NULL;
    size_t n;
    TH_EQ_INT(gt_base64url_decode("ab+c", 4, &d, &n), -1);  /* '+' is not base64url */
    TH_EQ_INT(gt_base64url_decode("ab/c", 4, &d, &n), -1);  /* nor is '/' */
    TH_EQ_INT(gt_base64url_decode("abcde", 5, &d, &n), -1); /* impossible length */
    TH_EQ_INT(gt_base64url_decode("ab=c", 4, &d, &n), -1);  /* '=' only at the end */
    TH_EQ_INT(gt_base64url_decode("ab\0c", 4, &d, &n), -1); /* NUL inside */
}

int main(void)
{
    static const th_test_t tests[] = {
        {"base64 encodes the RFC 4648 vectors", test_std_encode},
        {"base64 decodes the RFC 4648 vectors", test_std_decode},
        {"base64 refuses bad length, alphabet and padding", test_std_decode_strict},
        {"base64url encodes without padding", test_url_encode},
        {"base64url decodes with or without padding", test_url_decode},
        {"base64url refuses the standard alphabet and bad lengths", test_url_decode_strict},
        {NULL, NULL},
    };
    return th_run("base64", tests);
}
