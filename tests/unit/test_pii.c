/* test_pii.c - the PII detector against the labelled corpus in
 * tests/data/pii/corpus.tsv (precision and recall per type), and its edges. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "pii.h"

typedef struct found {
    char *text;
    gt_pii_finding_t f[32];
    int n;
} found_t;

static int collect(const gt_pii_finding_t *f, void *arg)
{
    found_t *fd = arg;
    if (fd->n < 32)
        fd->f[fd->n++] = *f;
    return 0;
}

static void test_corpus(void)
{
    FILE *in = fopen(th_src("tests/data/pii/corpus.tsv"), "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    long tp[GT_PII_NTYPES] = {0}, fp[GT_PII_NTYPES] = {0}, fn[GT_PII_NTYPES] = {0};
    char line[4096];
    int lines = 0, negatives = 0;
    while (fgets(line, sizeof(line), in)) {
        line[strcspn(line, "\n")] = 0;
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        *tab = 0;
        lines++;
        found_t fd = {.text = tab + 1};
        gt_pii_scan(fd.text, strlen(fd.text), GT_PII_ALL, 0.5, collect, &fd);
        int used[32] = {0};
        negatives += strcmp(line, "-") == 0;
        /* labels: "type=value | type=value" or "-" */
        char *save = NULL;
        for (char *lab = strtok_r(line, "|", &save); lab && strcmp(line, "-") != 0;
             lab = strtok_r(NULL, "|", &save)) {
            while (*lab == ' ')
                lab++;
            char *eq = strchr(lab, '=');
            if (!eq)
                continue;
            *eq = 0;
            char *val = eq + 1;
            size_t vl = strlen(val);
            while (vl && val[vl - 1] == ' ')
                val[--vl] = 0;
            int t = gt_pii_type_parse(lab);
            CU_ASSERT_FATAL(t >= 0);
            int hit = 0;
            for (int k = 0; k < fd.n && !hit; k++)
                if (!used[k] && (int)fd.f[k].type == t && fd.f[k].end - fd.f[k].start == vl &&
                    memcmp(fd.text + fd.f[k].start, val, vl) == 0)
                    used[k] = hit = 1;
            if (hit) {
                tp[t]++;
            } else {
                fn[t]++;
                fprintf(stderr, "  missed %s \"%s\" in: %s\n", lab, val, fd.text);
            }
        }
        for (int k = 0; k < fd.n; k++)
            if (!used[k]) {
                fp[fd.f[k].type]++;
                fprintf(stderr, "  false %s \"%.*s\" in: %s\n", gt_pii_type_name(fd.f[k].type),
                        (int)(fd.f[k].end - fd.f[k].start), fd.text + fd.f[k].start, fd.text);
            }
    }
    fclose(in);
    fprintf(stderr, "  corpus: %d lines, %d without PII\n", lines, negatives);
    CU_ASSERT(lines >= 300);
    fprintf(stderr, "  %-6s %6s %6s %6s %9s %7s\n", "type", "tp", "fp", "fn", "precision",
            "recall");
    for (int t = 0; t < GT_PII_NTYPES; t++) {
        double p = tp[t] + fp[t] ? (double)tp[t] / (double)(tp[t] + fp[t]) : 1.0;
        double r = tp[t] + fn[t] ? (double)tp[t] / (double)(tp[t] + fn[t]) : 1.0;
        fprintf(stderr, "  %-6s %6ld %6ld %6ld %9.3f %7.3f\n", gt_pii_type_name((gt_pii_type_t)t),
                tp[t], fp[t], fn[t], p, r);
        CU_ASSERT(tp[t] >= 10); /* every type has positives in several formats */
        CU_ASSERT(p >= 0.95);
        CU_ASSERT(r >= 0.98);
    }
}

static int scan1(const char *text, gt_pii_type_t *type, char *val, size_t vlen)
{
    found_t fd = {.text = (char *)text};
    gt_pii_scan(text, strlen(text), GT_PII_ALL, 0.5, collect, &fd);
    if (fd.n == 1) {
        *type = fd.f[0].type;
        snprintf(val, vlen, "%.*s", (int)(fd.f[0].end - fd.f[0].start), text + fd.f[0].start);
    }
    return fd.n;
}

static void test_edges(void)
{
    gt_pii_type_t t;
    char v[128];
    /* Checksums decide: Luhn and mod-97. */
    TH_EQ_INT(scan1("pay 4111111111111111 now", &t, v, sizeof(v)), 1);
    TH_EQ_INT(t, GT_PII_CARD);
    TH_EQ_INT(scan1("pay 4111111111111112 now", &t, v, sizeof(v)), 0);
    TH_EQ_INT(scan1("iban GB82WEST12345698765432", &t, v, sizeof(v)), 1);
    TH_EQ_INT(t, GT_PII_IBAN);
    TH_EQ_INT(scan1("iban GB83WEST12345698765432", &t, v, sizeof(v)), 0);
    /* Spans end at sentence punctuation, not inside a version. */
    TH_EQ_INT(scan1("mail bob@example.com.", &t, v, sizeof(v)), 1);
    TH_EQ_STR(v, "bob@example.com");
    TH_EQ_INT(scan1("v 10.0.0.1.2 build", &t, v, sizeof(v)), 0);
    TH_EQ_INT(scan1("at 10.0.0.1.", &t, v, sizeof(v)), 1);
    TH_EQ_STR(v, "10.0.0.1");
    /* Timestamps are not birth dates; the same date after "born" is. */
    TH_EQ_INT(scan1("2024-01-05T10:00:00Z", &t, v, sizeof(v)), 0);
    TH_EQ_INT(scan1("born 2014-01-05", &t, v, sizeof(v)), 1);
    TH_EQ_INT(t, GT_PII_DOB);
    TH_EQ_INT(scan1("SSN 666-12-3456", &t, v, sizeof(v)), 0); /* never issued */
    /* The type mask and the confidence threshold filter. */
    found_t fd = {0};
    const char *s = "a@b.co 4111111111111111";
    TH_EQ_INT(gt_pii_scan(s, strlen(s), 1u << GT_PII_CARD, 0.5, collect, &fd), 1);
    TH_EQ_INT(fd.f[0].type, GT_PII_CARD);
    /* Not NUL-terminated: the scan stays inside len. */
    char raw[8] = {'1', '.', '2', '.', '3', '.', '4', '5'};
    fd.n = 0;
    TH_EQ_INT(gt_pii_scan(raw, 7, GT_PII_ALL, 0.5, collect, &fd), 1);
    TH_EQ_INT(fd.f[0].end, 7);
    TH_EQ_INT(gt_pii_scan("", 0, GT_PII_ALL, 0.5, collect, &fd), 1 - 1);
    TH_EQ_INT(gt_pii_type_parse("iban"), GT_PII_IBAN);
    TH_EQ_INT(gt_pii_type_parse("nope"), -1);
}

int main(void)
{
    static const th_test_t tests[] = {
        {"labelled corpus: precision and recall per type", test_corpus},
        {"checksums, boundaries, masks, lengths", test_edges},
        {NULL, NULL},
    };
    return th_run("pii", tests);
}
