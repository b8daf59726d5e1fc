/*
 * nodelete: an otherwise ordinary module linked with `-Wl,-z,nodelete` (build it so: the flag is
 * what this sample demonstrates). glibc never unmaps such an object, whatever dlclose returns,
 * so the host refuses it at inspection ("module can never be unloaded: nodelete"), and with
 * --allow-pinned loads it but reports the unload as Pinned instead of pretending.
 */
#include "rcumod.h"

static int nodelete_init(const struct rcumod_host_api *api, struct rcumod_ctx *ctx)
{
	(void)api;
	(void)ctx;
	return RCUMOD_OK;
}

static void nodelete_exit(const struct rcumod_host_api *api, struct rcumod_ctx *ctx)
{
	(void)api;
	(void)ctx;
}

RCUMOD_MODINFO("name=nodelete\0version=1.0\0license=MIT OR Apache-2.0\0"
	       "description=linked -z nodelete: can never be unmapped\0depends=\0");
RCUMOD_MODULE("nodelete", nodelete_init, nodelete_exit);
