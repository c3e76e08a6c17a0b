/* rand.c - the one xorshift64 generator behind backoff jitter (see rand.h). */
#include <stdint.h>
#include <unistd.h>

#include "clock.h"
#include "rand.h"

double gt_rand_unit(void)
{
    static uint64_t s;
    if (s == 0)
        s = ((uint64_t)gt_clock_mono_ms() * 6364136223846793005ULL) ^ (uint64_t)getpid() ^
            (uint64_t)(uintptr_t)&s ^ 1;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (double)(s >> 11) / 9007199254740992.0;
}
