// Shim: linux/types.h includes <asm/types.h>, which Debian keeps under the
// multiarch directory of the host, not the BPF target. The generic integer
// types are all a BPF object needs.
#ifndef PRX_ASM_TYPES_H
#define PRX_ASM_TYPES_H
#include <asm-generic/types.h>
#endif
