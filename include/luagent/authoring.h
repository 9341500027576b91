/**
 * authoring.h - the agent author's commands (src/authoring.c, docs/authoring.md).
 */
#ifndef LUAGENT_AUTHORING_H
#define LUAGENT_AUTHORING_H

#include "luagent/config.h"

/** `luagent new NAME`: write LUAGENT_AGENTS_DIR/NAME.lua and spec/NAME_spec.lua (spec/ beside the
 *  agents directory) from the templates in the binary. Refuses a bad name (2) and an existing file
 *  (1, nothing written). Returns the exit status. */
int lg_cmd_new(const lg_config_t *cfg, int argc, char **argv);
/** `luagent test [DIR] [busted options]`: run the specs in DIR (default: that spec/) with busted
 *  under LuaJIT, the luagent.testing module on LUA_PATH. Returns busted's exit status. */
int lg_cmd_test(const lg_config_t *cfg, int argc, char **argv);

#endif
