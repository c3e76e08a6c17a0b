/* rand.c - the one splitmix64 generator behind jitter, routing and the mocks
 * (see rand.h). */
#include <openssl/rand.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "rand.h"

uint64_t gt_rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double gt_rand_unit_r(uint64_t *state)
{
    return (double)(gt_rand_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t gt_rand_seed_of(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

double gt_rand_unit(void)
{
    static uint64_t s;
    static int seeded;
    if (!seeded) {
        s = ((uint64_t)gt_clock_mono_ms() * 6364136223846793005ULL) ^ (uint64_t)getpid() ^
            (uint64_t)(uintptr_t)&s;
        seeded = 1;
    }
    return gt_rand_unit_r(&s);
}

int gt_rand_secure(void *out, size_t n)
{
    static _Thread_local unsigned char pool[4096];
    static _Thread_local size_t left;
    unsigned char *o = out;
    while (n > 0) {
        if (left == 0) {
            if (RAND_bytes(pool, (int)sizeof(pool)) != 1)
                return -1;
            left = sizeof(pool);
        }
        size_t k = n < left ? n : left;
        unsigned char *from = pool + sizeof(pool) - left;
        memcpy(o, from, k);
        memset(from, 0, k); /* handed out once */
        left -= k;
        o += k;
        n -= k;
    }
    return 0;
}
