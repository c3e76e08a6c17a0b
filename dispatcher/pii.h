/* pii.h - personal data detector: one pass over UTF-8 text, no regex engine.
 * Finds e-mail addresses, phone numbers, US SSNs, payment cards (Luhn), IPv4
 * and IPv6 addresses, IBANs (mod-97) and dates of birth. */
#ifndef GT_PII_H
#define GT_PII_H

#include <stddef.h>

typedef enum {
    GT_PII_EMAIL,
    GT_PII_PHONE,
    GT_PII_SSN,
    GT_PII_CARD,
    GT_PII_IPV4,
    GT_PII_IPV6,
    GT_PII_IBAN,
    GT_PII_DOB,
    GT_PII_NTYPES
} gt_pii_type_t;

#define GT_PII_ALL ((1u << GT_PII_NTYPES) - 1)

typedef struct gt_pii_finding {
    gt_pii_type_t type;
    size_t start, end; /* byte span [start, end) */
    double confidence; /* 0..1: 0.9+ checksummed or unambiguous, ~0.6 plausible */
} gt_pii_finding_t;

/* Called for each finding, in text order, spans never overlapping. Return
 * non-zero to stop the scan. */
typedef int (*gt_pii_cb)(const gt_pii_finding_t *f, void *arg);

/* Scans s[0, n) (need not be NUL-terminated) for the types in the mask
 * (bits 1 << gt_pii_type_t) with confidence >= min_confidence. Returns the
 * number of findings reported. Never fails, never allocates. */
size_t gt_pii_scan(const char *s, size_t n, unsigned types, double min_confidence, gt_pii_cb cb,
                   void *arg);

/* "email", "phone", "ssn", "card", "ipv4", "ipv6", "iban", "dob". */
const char *gt_pii_type_name(gt_pii_type_t t);
/* The type of a name above, or -1. */
int gt_pii_type_parse(const char *name);

#endif
