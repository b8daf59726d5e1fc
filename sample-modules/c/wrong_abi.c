/*
 * wrong_abi: a module built against an ABI the host does not speak (2.0). The host refuses it
 * before running any of it, in kmod's words:
 *   version magic 'rcumod-abi 2.0' should be 'rcumod-abi 1.0'
 * and `rcumod modinfo` still describes it, listing that as a problem.
 */
#include "rcumod.h"

static int wrong_abi_init(const struct rcumod_host_api *api, struct rcumod_ctx *ctx)
{
	(void)api;
	(void)ctx;
	return RCUMOD_OK;
}

static void wrong_abi_exit(const struct rcumod_host_api *api, struct rcumod_ctx *ctx)
{
	(void)api;
	(void)ctx;
}

/* Written by hand instead of RCUMOD_MODINFO, which always records the header's ABI. */
__attribute__((section(".modinfo"), used)) static const char modinfo[] =
	"name=wrong_abi\0version=1.0\0license=MIT OR Apache-2.0\0"
	"description=built against ABI 2.0, refused before it runs\0abi=2.0\0";

const struct rcumod_module rcumod_module __attribute__((visibility("default"))) = {
	RCUMOD_DESCRIPTOR_MAGIC, 2, 0, sizeof(struct rcumod_module), 0,
	"wrong_abi", wrong_abi_init, wrong_abi_exit,
};
