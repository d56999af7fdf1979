// Shim, as types.h beside it.
#ifndef PRX_ASM_POSIX_TYPES_H
#define PRX_ASM_POSIX_TYPES_H
#include <asm-generic/posix_types.h>
#endif
