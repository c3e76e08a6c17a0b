/* http.c - placeholder until implemented. */
typedef int gt_placeholder_http_t;
