/* dispatcher_config.h - loads the dispatcher's sections of gantry.json (routing,
 * tenants.<id>.guardrails and .cache, moderation, dispatcher, ledger) into gt_config_t. */
#ifndef GT_DISPATCHER_CONFIG_H
#define GT_DISPATCHER_CONFIG_H

/* Adds the dispatcher's section loader to this process's configuration loads
 * (gt_config_add_section); call it before the first gt_config_load. Returns 0
 * or -ENOSPC. */
int gt_dispatcher_config_register(void);

#endif
