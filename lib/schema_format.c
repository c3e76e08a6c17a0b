/* schema_format.c - the "format" checks JSON Schema validation runs: RFC 3339
 * date-time (section 5.6, calendar-checked); every other format is an annotation. */
#include <stdint.h>
#include <string.h>

#include "clock.h"
#include "schema_internal.h"

int gt__schema_is_datetime(const char *s, size_t len)
{
    int64_t ms;
    return strlen(s) == len && gt_clock_parse(s, &ms) == 0;
}
