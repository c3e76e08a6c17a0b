/* pii.c - personal data detector. One forward pass: at each token start the
 * detectors that can begin with that byte are tried (hand-written matchers,
 * each bounded in length); the rest of a token is skipped with a table. */
#include <pthread.h>
#include <string.h>

#include "pii.h"

enum {
    C_DIGIT = 1,   /* 0-9 */
    C_UPPER = 2,   /* A-Z */
    C_LOWER = 4,   /* a-z */
    C_HEX = 8,     /* 0-9a-fA-F */
    C_LOCAL = 16,  /* e-mail local part: alnum . _ % + - */
    C_RUN = 32,    /* token body skipped in one go */
    C_LEFT = 64,   /* a token may start after this byte */
    C_RIGHT = 128, /* a match may end before this byte */
};

static unsigned char cls[256];

static unsigned short month_first[256]; /* months (bits) whose name starts with a byte */
static const char *const months[] = {"january",   "february", "march",    "april",
                                     "may",       "june",     "july",     "august",
                                     "september", "october",  "november", "december"};
static pthread_once_t cls_once = PTHREAD_ONCE_INIT;

static void init_classes(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if (c >= '0' && c <= '9')
            k |= C_DIGIT | C_HEX | C_LOCAL | C_RUN;
        if (c >= 'A' && c <= 'Z')
            k |= C_UPPER | C_LOCAL | C_RUN;
        if (c >= 'a' && c <= 'z')
            k |= C_LOWER | C_LOCAL | C_RUN;
        if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            k |= C_HEX;
        if (c >= 0x80)
            k |= C_RUN | C_LOCAL; /* other scripts are word characters (RFC 6531 mail) */
        if (strchr("._%+-", c) && c)
            k |= C_LOCAL | C_RUN;
        if (strchr("/#&~\\", c) && c)
            k |= C_RUN;
        if (strchr(" \t\r\n\f\v([{\"'<>,;=:|*`", c) && c)
            k |= C_LEFT;
        if (strchr(" \t\r\n\f\v)]}\"'<>,;!?|*`", c) && c)
            k |= C_RIGHT;
        cls[c] = k;
    }
    for (int m = 0; m < 12; m++) {
        month_first[(unsigned char)months[m][0]] |= (unsigned short)(1u << m);
        month_first[(unsigned char)(months[m][0] - 32)] |= (unsigned short)(1u << m);
    }
}

#define U(p) ((unsigned char)(p))
#define IS(c, k) (cls[U(c)] & (k))

/* A match may end at j: end of text, a closing byte, or . : - not followed
 * by a word character (end of sentence). */
static int right_ok(const char *s, size_t n, size_t j)
{
    if (j >= n || IS(s[j], C_RIGHT))
        return 1;
    if ((s[j] == '.' || s[j] == ':' || s[j] == '-') &&
        (j + 1 >= n || !IS(s[j + 1], C_DIGIT | C_UPPER | C_LOWER)))
        return 1;
    return 0;
}

static size_t digits_at(const char *s, size_t n, size_t j, size_t max, int *val)
{
    size_t k = 0;
    int v = 0;
    while (j + k < n && k < max && IS(s[j + k], C_DIGIT)) {
        if (k < 9) /* the value is only read for short fields */
            v = v * 10 + (s[j + k] - '0');
        k++;
    }
    if (val)
        *val = v;
    return k;
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* A keyword within the 48 bytes before i ("born", "DOB", "SSN" ...). */
static int has_context(const char *s, size_t i, const char *const *words)
{
    char win[49];
    size_t from = i > 48 ? i - 48 : 0, k = 0;
    for (size_t p = from; p < i; p++)
        win[k++] = (char)lower(U(s[p]));
    win[k] = 0;
    for (; *words; words++)
        if (strstr(win, *words))
            return 1;
    return 0;
}

/* ---- e-mail ---------------------------------------------------------------- */

/* at: the '@'; lo: lowest byte the local part may start at. */
static int try_email(const char *s, size_t n, size_t lo, size_t at, size_t *start, size_t *end)
{
    size_t k = at;
    while (k > lo && at - k < 64 && IS(s[k - 1], C_LOCAL))
        k--;
    while (k < at && (U(s[k]) & 0xC0) == 0x80)
        k++; /* never start inside a UTF-8 sequence */
    while (k < at && (s[k] == '.' || s[k] == '-' || s[k] == '+'))
        k++;
    if (k == at || s[at - 1] == '.')
        return 0;
    size_t j = at + 1, last_dot = 0, labels = 0;
    for (;;) {
        size_t l = j;
        while (j < n && j - at < 255 && (IS(s[j], C_DIGIT | C_UPPER | C_LOWER) || s[j] == '-'))
            j++;
        if (j == l || s[l] == '-' || s[j - 1] == '-')
            return 0;
        labels++;
        if (j + 1 < n && s[j] == '.' && IS(s[j + 1], C_DIGIT | C_UPPER | C_LOWER)) {
            last_dot = j++;
            continue;
        }
        break;
    }
    if (labels < 2 || j - last_dot - 1 < 2)
        return 0;
    for (size_t t = last_dot + 1; t < j; t++)
        if (!IS(s[t], C_UPPER | C_LOWER))
            return 0; /* the top-level domain is letters */
    *start = k;
    *end = j;
    return 1;
}

/* ---- numbers with separators ---------------------------------------------- */

static int luhn_ok(const char *d, size_t len)
{
    int sum = 0;
    for (size_t k = 0; k < len; k++) {
        int v = d[len - 1 - k] - '0';
        if (k & 1) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    return sum % 10 == 0;
}

/* Known issuer prefixes and lengths. */
static int card_brand(const char *d, size_t len)
{
    int p2 = (d[0] - '0') * 10 + (d[1] - '0');
    int p4 = p2 * 100 + (d[2] - '0') * 10 + (d[3] - '0');
    if (d[0] == '4')
        return len == 13 || len == 16 || len == 19;
    if (p2 == 34 || p2 == 37)
        return len == 15;
    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
        return len == 16;
    if (p4 == 6011 || p2 == 65 || (p4 >= 6440 && p4 <= 6499) || p2 == 62)
        return len >= 16 && len <= 19;
    if (p2 == 35)
        return len >= 16 && len <= 19;
    if (p2 == 36 || p2 == 38 || p2 == 30)
        return len >= 14 && len <= 16;
    return 0;
}

/* 13-19 digits, optionally grouped by single spaces or dashes (one kind). */
static int try_card(const char *s, size_t n, size_t i, size_t *end, double *conf)
{
    char d[20];
    size_t len = 0, j = i;
    char sep = 0;
    for (;;) {
        size_t g = 0;
        while (j < n && IS(s[j], C_DIGIT)) {
            if (len == 19)
                return 0;
            d[len++] = s[j++];
            g++;
        }
        if (g == 0)
            return 0;
        if (j + 1 < n && (s[j] == ' ' || s[j] == '-') && IS(s[j + 1], C_DIGIT) &&
            (!sep || sep == s[j]) && len < 19) {
            if (g < 3)
                break;
            sep = s[j++];
            continue;
        }
        break;
    }
    if (len < 13 || !right_ok(s, n, j) || !luhn_ok(d, len))
        return 0;
    *end = j;
    *conf = card_brand(d, len) ? 0.95 : 0.4;
    return 1;
}

static const char *const ssn_words[] = {"ssn", "social security", "ss#", "ss no", NULL};

/* ddd-dd-dddd, ddd dd dddd; nine bare digits only after an SSN keyword. */
static int try_ssn(const char *s, size_t n, size_t i, size_t *end, double *conf)
{
    int a, g, r;
    size_t j = i;
    if (digits_at(s, n, j, 4, &a) != 3)
        goto bare;
    j += 3;
    char sep = j < n ? s[j] : 0;
    if (sep != '-' && sep != ' ')
        goto bare;
    if (digits_at(s, n, ++j, 3, &g) != 2 || j + 2 >= n || s[j + 2] != sep)
        return 0;
    j += 3;
    if (digits_at(s, n, j, 5, &r) != 4)
        return 0;
    j += 4;
    if (!right_ok(s, n, j) || a == 0 || a == 666 || a >= 900 || g == 0 || r == 0)
        return 0;
    *end = j;
    *conf = sep == '-' || has_context(s, i, ssn_words) ? 0.95 : 0.7;
    return 1;
bare:
    j = i;
    if (digits_at(s, n, j, 10, NULL) != 9 || !right_ok(s, n, j + 9) ||
        !has_context(s, i, ssn_words))
        return 0;
    digits_at(s, n, j, 3, &a);
    if (a == 0 || a == 666 || a >= 900)
        return 0;
    *end = j + 9;
    *conf = 0.85;
    return 1;
}

static int try_ipv4_at(const char *s, size_t n, size_t i, size_t *end)
{
    size_t j = i;
    for (int part = 0; part < 4; part++) {
        int v;
        size_t k = digits_at(s, n, j, 4, &v);
        if (k == 0 || k > 3 || v > 255 || (k > 1 && s[j] == '0'))
            return 0;
        j += k;
        if (part < 3) {
            if (j >= n || s[j] != '.')
                return 0;
            j++;
        }
    }
    *end = j;
    return 1;
}

static int try_ipv4(const char *s, size_t n, size_t i, size_t *end, double *conf)
{
    if (!try_ipv4_at(s, n, i, end))
        return 0;
    size_t j = *end;
    if (!right_ok(s, n, j) && !(s[j] == ':' && j + 1 < n && IS(s[j + 1], C_DIGIT)))
        return 0; /* host:port is an address too */
    *conf = 0.9;
    return 1;
}

/* Hex groups with ':' and at most one '::', optionally an IPv4 tail. */
static int try_ipv6(const char *s, size_t n, size_t i, size_t *end, double *conf)
{
    size_t j = i;
    int groups = 0, dbl = 0;
    if (s[j] == ':') {
        if (j + 1 >= n || s[j + 1] != ':')
            return 0;
        dbl = 1;
        j += 2;
    }
    for (;;) {
        size_t k = 0;
        while (j + k < n && k < 5 && IS(s[j + k], C_HEX))
            k++;
        if (k == 0 || k > 4)
            break;
        size_t v4;
        if (j + k < n && s[j + k] == '.' && groups <= 6 && (dbl || groups == 6) &&
            try_ipv4_at(s, n, j, &v4)) {
            groups += 2;
            j = v4;
            break;
        }
        j += k;
        groups++;
        if (j + 1 < n && s[j] == ':' && s[j + 1] == ':') {
            if (dbl)
                return 0;
            dbl = 1;
            j += 2;
            continue;
        }
        if (j + 1 < n && s[j] == ':' && IS(s[j + 1], C_HEX)) {
            j++;
            continue;
        }
        break;
    }
    if (groups > 8 || (dbl ? groups > 7 || groups < 1 : groups != 8))
        return 0;
    /* "a::b", "std::x": too short to tell from C++ or prose unless it starts with "::" */
    if (dbl && groups <= 2 && s[i] != ':' && j - i < 7)
        return 0;
    if (!(right_ok(s, n, j) || (j < n && s[j] == '%')))
        return 0;
    *end = j;
    *conf = dbl && groups < 3 ? 0.6 : 0.9;
    return 1;
}

/* International (+cc ...) 8-15 digits, or national 10-11 digits in groups. */
static int try_phone(const char *s, size_t n, size_t i, size_t *end, double *conf)
{
    size_t j = i;
    int intl = 0, digits = 0, groups = 0, paren = 0, dots = 0, seps = 0, longest = 0;
    int glen[8];
    if (s[j] == '+') {
        intl = 1;
        j++;
        if (j >= n || !IS(s[j], C_DIGIT) || s[j] == '0')
            return 0;
    }
    for (;;) {
        if (j < n && s[j] == '(') {
            if (paren || groups > 1)
                return 0;
            size_t k = digits_at(s, n, j + 1, 6, NULL);
            if (k == 0 || k > 5 || j + 1 + k >= n || s[j + 1 + k] != ')')
                return 0;
            paren = 1;
            digits += (int)k;
            if (groups < 8)
                glen[groups] = (int)k;
            groups++;
            j += k + 2;
            if (j < n && s[j] == ' ' && j + 1 < n && IS(s[j + 1], C_DIGIT))
                j++, seps++;
            else if (j < n && IS(s[j], C_DIGIT))
                ;
            else
                break;
            continue;
        }
        size_t k = digits_at(s, n, j, 16, NULL);
        if (k == 0)
            return 0;
        digits += (int)k;
        if ((int)k > longest)
            longest = (int)k;
        if (groups < 8)
            glen[groups] = (int)k;
        groups++;
        j += k;
        if (digits > 15)
            return 0;
        if (j + 1 < n && (s[j] == ' ' || s[j] == '-' || s[j] == '.') &&
            (IS(s[j + 1], C_DIGIT) ||
             (s[j + 1] == '(' && !paren && groups <= 1 && j + 2 < n && IS(s[j + 2], C_DIGIT)))) {
            dots += s[j] == '.';
            seps++;
            j++;
            continue;
        }
        break;
    }
    if (!right_ok(s, n, j))
        return 0;
    if (intl) {
        if (digits < 8 || digits > 15)
            return 0;
        *conf = 0.9;
    } else {
        if (digits < 10 || digits > 11 || groups < 2 || groups > 6 || longest > 8)
            return 0;
        if (dots && (dots != seps || groups != 3))
            return 0;
        int nanp =
            groups >= 3 && glen[groups - 1] == 4 && glen[groups - 2] == 3 && glen[groups - 3] == 3;
        *conf = paren || nanp ? 0.85 : 0.7;
    }
    *end = j;
    return 1;
}

/* ---- dates of birth ------------------------------------------------------- */

static const char *const dob_words[] = {"born",  "dob",     "d.o.b",  "birth",
                                        "né le", "geboren", "nacido", NULL};
/* A month name (full or three letters, optional '.') at j: 1-12, or 0. */
static int month_at(const char *s, size_t n, size_t j, size_t *len)
{
    if (j + 3 > n)
        return 0;
    unsigned cand = month_first[U(s[j])]; /* most words: this one lookup */
    for (int m = 0; cand && m < 12; m++) {
        if (!(cand & (1u << m)))
            continue;
        const char *name = months[m];
        size_t k = 0;
        while (name[k] && j + k < n && lower(U(s[j + k])) == name[k])
            k++;
        if (k >= 3 && (name[k] == 0 || k == 3) &&
            (j + k >= n || !IS(s[j + k], C_UPPER | C_LOWER))) {
            if (j + k < n && s[j + k] == '.' && name[k])
                k++;
            *len = k;
            return m + 1;
        }
    }
    return 0;
}

static int date_valid(int y, int m, int d)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return y >= 1900 && y <= 2030 && m >= 1 && m <= 12 && d >= 1 && d <= mdays[m - 1];
}

/* Confidence of a valid date at [i, j): a birth date after a keyword, else
 * one that is plausibly a birth year; a timestamp never. */
static double date_conf(const char *s, size_t n, size_t i, size_t j, int year)
{
    if (j + 2 < n && (s[j] == 'T' || s[j] == ' ') && IS(s[j + 1], C_DIGIT) &&
        IS(s[j + 2], C_DIGIT) && j + 3 < n && s[j + 3] == ':')
        return 0.1;
    if (has_context(s, i, dob_words))
        return 0.95;
    return year <= 2012 ? 0.6 : 0.3;
}

static int try_date_num(const char *s, size_t n, size_t i, size_t *end, double *conf)
{
    int a, b, c;
    size_t j = i, k = digits_at(s, n, j, 5, &a);
    if (k == 4) { /* YYYY-MM-DD */
        j += 4;
        char sep = j < n ? s[j] : 0;
        if (sep != '-' && sep != '/' && sep != '.')
            return 0;
        size_t k2 = digits_at(s, n, ++j, 3, &b);
        if (k2 < 1 || k2 > 2 || j + k2 >= n || s[j + k2] != sep)
            return 0;
        j += k2 + 1;
        size_t k3 = digits_at(s, n, j, 3, &c);
        if (k3 < 1 || k3 > 2)
            return 0;
        j += k3;
        if (!date_valid(a, b, c) || !(right_ok(s, n, j) || (j < n && s[j] == 'T')))
            return 0;
        *end = j;
        *conf = date_conf(s, n, i, j, a);
        return 1;
    }
    if (k < 1 || k > 2)
        return 0;
    j += k;
    if (j < n && s[j] == ' ') { /* D Month YYYY */
        size_t ml;
        int m = month_at(s, n, j + 1, &ml);
        if (!m)
            return 0;
        j += 1 + ml;
        if (j < n && s[j] == ',')
            j++;
        if (j >= n || s[j] != ' ' || digits_at(s, n, j + 1, 5, &c) != 4)
            return 0;
        j += 5;
        if (!date_valid(c, m, a) || !right_ok(s, n, j))
            return 0;
        *end = j;
        *conf = date_conf(s, n, i, j, c);
        return 1;
    }
    char sep = j < n ? s[j] : 0; /* DD/MM/YYYY or MM/DD/YYYY */
    if (sep != '-' && sep != '/' && sep != '.')
        return 0;
    size_t k2 = digits_at(s, n, ++j, 3, &b);
    if (k2 < 1 || k2 > 2 || j + k2 >= n || s[j + k2] != sep)
        return 0;
    j += k2 + 1;
    if (digits_at(s, n, j, 5, &c) != 4)
        return 0;
    j += 4;
    if (!(date_valid(c, b, a) || date_valid(c, a, b)) || !right_ok(s, n, j))
        return 0;
    *end = j;
    *conf = date_conf(s, n, i, j, c);
    return 1;
}

/* Month D, YYYY / Month D YYYY / Month Dth, YYYY. */
static int try_date_word(const char *s, size_t n, size_t i, size_t *end, double *conf)
{
    size_t ml, j = i;
    int d, y, m = month_at(s, n, j, &ml);
    if (!m)
        return 0;
    j += ml;
    if (j >= n || s[j] != ' ')
        return 0;
    size_t k = digits_at(s, n, ++j, 3, &d);
    if (k < 1 || k > 2)
        return 0;
    j += k;
    if (j + 1 < n && IS(s[j], C_LOWER) && IS(s[j + 1], C_LOWER))
        j += 2; /* st, nd, rd, th */
    if (j < n && s[j] == ',')
        j++;
    if (j >= n || s[j] != ' ' || digits_at(s, n, j + 1, 5, &y) != 4)
        return 0;
    j += 5;
    if (!date_valid(y, m, d) || !right_ok(s, n, j))
        return 0;
    *end = j;
    *conf = date_conf(s, n, i, j, y);
    return 1;
}

/* ---- IBAN ------------------------------------------------------------------ */

static int mod97_ok(const char *c, size_t len)
{
    unsigned r = 0;
    for (size_t k = 0; k < len; k++) {
        char ch = c[(k + 4) % len];
        if (ch >= '0' && ch <= '9')
            r = (r * 10 + (unsigned)(ch - '0')) % 97;
        else
            r = (r * 100 + (unsigned)(ch - 'A' + 10)) % 97;
    }
    return r == 1;
}

/* CCdd then up to 30 upper-case letters or digits, compact or in groups of
 * four; the longest prefix that passes mod-97 and ends a token wins. */
static int try_iban(const char *s, size_t n, size_t i, size_t *end, double *conf)
{
    if (i + 4 > n || !IS(s[i], C_UPPER) || !IS(s[i + 1], C_UPPER) || !IS(s[i + 2], C_DIGIT) ||
        !IS(s[i + 3], C_DIGIT))
        return 0;
    char c[35];
    size_t cend[35]; /* byte end of the text after c[0..k] */
    size_t len = 0, j = i;
    while (j < n && len < 34) {
        if (IS(s[j], C_UPPER | C_DIGIT)) {
            c[len] = s[j++];
            cend[len++] = j;
            continue;
        }
        /* a single space between groups of four */
        if (s[j] == ' ' && len % 4 == 0 && j + 1 < n && IS(s[j + 1], C_UPPER | C_DIGIT) && j > i &&
            s[j - 1] != ' ') {
            j++;
            continue;
        }
        break;
    }
    for (size_t l = len; l >= 15; l--) {
        if (!right_ok(s, n, cend[l - 1]))
            continue;
        if (mod97_ok(c, l)) {
            *end = cend[l - 1];
            *conf = 0.95;
            return 1;
        }
    }
    return 0;
}

/* ---- the scan --------------------------------------------------------------- */

typedef struct scan {
    unsigned types;
    double min_conf;
    gt_pii_cb cb;
    void *arg;
    size_t count;
    int stop;
} scan_t;

static void emit(scan_t *sc, gt_pii_type_t t, size_t start, size_t end, double conf)
{
    if (!(sc->types & (1u << t)) || conf < sc->min_conf)
        return;
    gt_pii_finding_t f = {t, start, end, conf};
    sc->count++;
    if (sc->cb && sc->cb(&f, sc->arg))
        sc->stop = 1;
}

/* Tries the detectors that may start at s[i]; on a match sets *end (the span
 * is consumed even when its confidence is too low to report). */
static int detect_at(scan_t *sc, const char *s, size_t n, size_t i, size_t *end)
{
    unsigned char c = U(s[i]);
    double conf = 0;
    size_t e = 0;
    if (IS(c, C_DIGIT)) {
        size_t k = 0;
        while (i + k < n && k < 5 && IS(s[i + k], C_HEX))
            k++;
        int colon = i + k < n && s[i + k] == ':';
        if (colon && try_ipv6(s, n, i, &e, &conf)) {
            emit(sc, GT_PII_IPV6, i, e, conf);
        } else if (try_ipv4(s, n, i, &e, &conf)) {
            emit(sc, GT_PII_IPV4, i, e, conf);
        } else if (try_date_num(s, n, i, &e, &conf)) {
            emit(sc, GT_PII_DOB, i, e, conf);
        } else if (try_ssn(s, n, i, &e, &conf)) {
            emit(sc, GT_PII_SSN, i, e, conf);
        } else if (try_card(s, n, i, &e, &conf)) {
            emit(sc, GT_PII_CARD, i, e, conf);
        } else if (try_phone(s, n, i, &e, &conf)) {
            emit(sc, GT_PII_PHONE, i, e, conf);
        } else {
            return 0;
        }
    } else if (c == '+' || c == '(') {
        if (!try_phone(s, n, i, &e, &conf))
            return 0;
        emit(sc, GT_PII_PHONE, i, e, conf);
    } else if (IS(c, C_UPPER | C_LOWER)) {
        if (IS(c, C_UPPER) && try_iban(s, n, i, &e, &conf))
            emit(sc, GT_PII_IBAN, i, e, conf);
        else if (try_date_word(s, n, i, &e, &conf))
            emit(sc, GT_PII_DOB, i, e, conf);
        else if (IS(c, C_HEX) && try_ipv6(s, n, i, &e, &conf))
            emit(sc, GT_PII_IPV6, i, e, conf);
        else
            return 0;
    } else if (c == ':') {
        if (!try_ipv6(s, n, i, &e, &conf))
            return 0;
        emit(sc, GT_PII_IPV6, i, e, conf);
    } else {
        return 0;
    }
    *end = e;
    return 1;
}

size_t gt_pii_scan(const char *s, size_t n, unsigned types, double min_confidence, gt_pii_cb cb,
                   void *arg)
{
    pthread_once(&cls_once, init_classes);
    scan_t sc = {types, min_confidence, cb, arg, 0, 0};
    size_t i = 0;
    while (i < n && !sc.stop) {
        size_t end;
        if ((i == 0 || IS(s[i - 1], C_LEFT)) && detect_at(&sc, s, n, i, &end)) {
            i = end;
            continue;
        }
        if (IS(s[i], C_DIGIT) || s[i] == '+' || s[i] == '(') {
            /* The tail of a number that matched nothing is not a new number. */
            i++;
            while (i < n && (IS(s[i], C_DIGIT) || ((s[i] == ' ' || s[i] == '-' || s[i] == '.' ||
                                                    s[i] == '(' || s[i] == ')') &&
                                                   i + 1 < n && IS(s[i + 1], C_DIGIT))))
                i++;
            continue;
        }
        if (!IS(s[i], C_RUN)) {
            i++;
            continue;
        }
        size_t run = i;
        while (i < n && IS(s[i], C_RUN))
            i++;
        if (i < n && s[i] == '@') {
            size_t st;
            if (try_email(s, n, run, i, &st, &end)) {
                emit(&sc, GT_PII_EMAIL, st, end, 0.95);
                i = end;
            } else {
                i++;
            }
        }
    }
    return sc.count;
}

static const char *const names[GT_PII_NTYPES] = {"email", "phone", "ssn",  "card",
                                                 "ipv4",  "ipv6",  "iban", "dob"};

const char *gt_pii_type_name(gt_pii_type_t t)
{
    return (unsigned)t < GT_PII_NTYPES ? names[t] : "unknown";
}

int gt_pii_type_parse(const char *name)
{
    for (int t = 0; t < GT_PII_NTYPES; t++)
        if (name && strcmp(name, names[t]) == 0)
            return t;
    return -1;
}
