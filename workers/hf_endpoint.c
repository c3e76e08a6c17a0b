/* hf_endpoint.c - the hf_endpoint runtime's wire format (placeholder until implemented: every
 * build fails with "not implemented", so a model using it fails clearly). */
#include "provider.h"

static int build(const gt_provider_t *p, const gt_wire_task_t *t, const gt_wire_auth_t *auth,
                 gt_wire_request_t *out, const char **why)
{
    (void)p, (void)t, (void)auth, (void)out;
    *why = "runtime hf_endpoint is not implemented yet";
    return -1;
}

static int parse(const gt_wire_task_t *t, const char *body, size_t len, gt_wire_answer_t *out,
                 const char **why)
{
    (void)t, (void)body, (void)len, (void)out;
    *why = "runtime hf_endpoint is not implemented yet";
    return -1;
}

const gt_runtime_t gt_runtime_hf_endpoint = {"hf_endpoint", 0, build, parse};
