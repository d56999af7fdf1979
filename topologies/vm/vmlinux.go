package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Booting Debian's bzImage under TCG spends about five seconds of every
// boot in the kernel's own XZ decompressor, emulated. The uncompressed
// vmlinux inside it carries a PVH entry point (CONFIG_PVH=y, an ELF note),
// which qemu can jump to directly, so the runner extracts it once per
// kernel, on the host, and caches it. When extraction is impossible (no xz
// on the host, an unknown compressor, no PVH note) it boots the bzImage.

// x86 boot protocol offsets (Documentation/arch/x86/boot.rst).
const (
	bootSetupSects    = 0x1f1 // u8: setup sectors after the boot sector; 0 means 4
	bootHeaderMagic   = 0x202 // "HdrS"
	bootVersion       = 0x206 // u16: boot protocol version
	bootPayloadOffset = 0x248 // u32, protocol >= 2.08: from the protected-mode code
	bootPayloadLength = 0x24c // u32
)

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY, the note that tells a
// loader the kernel's 32-bit PVH entry point.
const xenElfnotePhys32Entry = 18

// bzPayload returns the compressed kernel inside a bzImage and the size the
// build appended after it (the uncompressed length, little-endian u32).
func bzPayload(img []byte) (payload []byte, size uint32, err error) {
	if len(img) < bootPayloadLength+4 || string(img[bootHeaderMagic:bootHeaderMagic+4]) != "HdrS" {
		return nil, 0, errors.New("not a bzImage (no HdrS header)")
	}
	if v := binary.LittleEndian.Uint16(img[bootVersion:]); v < 0x208 {
		return nil, 0, fmt.Errorf("boot protocol %#x predates payload fields (2.08)", v)
	}
	sects := int(img[bootSetupSects])
	if sects == 0 {
		sects = 4
	}
	start := (sects + 1) * 512
	off := int(binary.LittleEndian.Uint32(img[bootPayloadOffset:]))
	n := int(binary.LittleEndian.Uint32(img[bootPayloadLength:]))
	if n < 4 || start+off+n > len(img) {
		return nil, 0, fmt.Errorf("payload [%d,+%d) outside the %d-byte image", start+off, n, len(img))
	}
	p := img[start+off : start+off+n]
	// arch/x86/boot/compressed/Makefile appends the uncompressed size to
	// every compressor's output (size_append); decompressors reject it as
	// trailing garbage, so cut it off.
	return p[:n-4], binary.LittleEndian.Uint32(p[n-4:]), nil
}

// decompressKernel inflates a bzImage payload by its magic number.
func decompressKernel(ctx context.Context, payload []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		return io.ReadAll(zr)
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		return pipeThrough(ctx, payload, "xz", "-dc", "--single-stream")
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return pipeThrough(ctx, payload, "zstd", "-dc")
	}
	n := min(len(payload), 4)
	return nil, fmt.Errorf("unknown kernel compression (magic % x)", payload[:n])
}

func pipeThrough(ctx context.Context, in []byte, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// hasPVHEntry says whether an ELF kernel carries XEN_ELFNOTE_PHYS32_ENTRY,
// without which qemu cannot boot it directly.
func hasPVHEntry(vmlinux []byte) error {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return fmt.Errorf("not an ELF kernel: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return err
		}
		// Each note: namesz, descsz, type (u32 each), name and desc padded
		// to 4 bytes.
		for len(notes) >= 12 {
			namesz := binary.LittleEndian.Uint32(notes[0:])
			descsz := binary.LittleEndian.Uint32(notes[4:])
			typ := binary.LittleEndian.Uint32(notes[8:])
			name := notes[12:min(len(notes), 12+int(namesz))]
			if string(bytes.TrimRight(name, "\x00")) == "Xen" && typ == xenElfnotePhys32Entry {
				return nil
			}
			adv := 12 + align4(int(namesz)) + align4(int(descsz))
			if adv > len(notes) {
				break
			}
			notes = notes[adv:]
		}
	}
	return errors.New("kernel has no PVH entry note (CONFIG_PVH)")
}

func align4(n int) int { return (n + 3) &^ 3 }

// ensureVmlinux returns a cached uncompressed, PVH-bootable vmlinux for
// kernel ver, extracting it on first use. The cache name carries the
// bzImage's size and modification time, so a reinstalled kernel of the same
// version is extracted again.
func ensureVmlinux(ctx context.Context, ver, cacheDir string, log *slog.Logger) (string, error) {
	img := kernelImage(ver)
	st, err := os.Stat(img)
	if err != nil {
		return "", err
	}
	name := fmt.Sprintf("prx-vm-vmlinux-%s-%x-%x", ver, st.Size(), st.ModTime().UnixNano())
	path := filepath.Join(cacheDir, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	start := time.Now()
	data, err := os.ReadFile(img)
	if err != nil {
		return "", err
	}
	payload, size, err := bzPayload(data)
	if err != nil {
		return "", err
	}
	vmlinux, err := decompressKernel(ctx, payload)
	if err != nil {
		return "", fmt.Errorf("decompress %s: %w", img, err)
	}
	if uint32(len(vmlinux)) != size {
		return "", fmt.Errorf("decompress %s: got %d bytes, the image says %d", img, len(vmlinux), size)
	}
	if err := hasPVHEntry(vmlinux); err != nil {
		return "", err
	}
	if err := writeCacheFile(cacheDir, path, vmlinux); err != nil {
		return "", err
	}
	pruneCache(cacheDir, "prx-vm-vmlinux-"+ver+"-*", path)
	log.Debug("vm vmlinux extracted", "path", path, "bytes", len(vmlinux), "took", time.Since(start))
	return path, nil
}

// writeCacheFile writes data to a temporary name in dir and renames it to
// path, so a concurrent run never reads a half-written file.
func writeCacheFile(dir, path string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create cache directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".prx-vm-*.tmp")
	if err != nil {
		return fmt.Errorf("create cache file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	return nil
}
