// Shim, as types.h beside it: BPF is a 64-bit target.
#ifndef PRX_ASM_BITSPERLONG_H
#define PRX_ASM_BITSPERLONG_H
#include <asm-generic/bitsperlong.h>
#endif
