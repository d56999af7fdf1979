package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// cpioEntry is one parsed newc entry.
type cpioEntry struct {
	Name string
	Mode uint32
	Data string
}

// parseNewc reads a newc archive back, checking the invariants the kernel's
// unpacker relies on: the magic, 4-byte alignment of names and data, a
// NUL-terminated name whose length matches c_namesize, and a trailer last.
func parseNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("entry at %d is not 4-aligned", off)
		}
		if off+cpioHeaderLen > len(b) {
			t.Fatalf("archive ends at %d without a trailer", off)
		}
		h := string(b[off : off+cpioHeaderLen])
		if h[:6] != cpioMagic {
			t.Fatalf("entry at %d: magic %q", off, h[:6])
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(h[6+8*i:6+8*i+8], 16, 32)
			if err != nil {
				t.Fatalf("entry at %d field %d: %v", off, i, err)
			}
			return uint32(v)
		}
		mode, size, namesize := field(1), int(field(6)), int(field(11))
		if field(12) != 0 {
			t.Fatalf("entry at %d: c_check %d, want 0 in newc", off, field(12))
		}
		nameStart := off + cpioHeaderLen
		name := b[nameStart : nameStart+namesize]
		if name[len(name)-1] != 0 {
			t.Fatalf("entry at %d: name %q not NUL-terminated", off, name)
		}
		dataStart := align4(nameStart + namesize)
		data := b[dataStart : dataStart+size]
		off = align4(dataStart + size)
		n := string(name[:len(name)-1])
		if n == cpioTrailer {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, cpioEntry{Name: n, Mode: mode, Data: string(data)})
	}
}

func sampleArchive(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	w.Dir("bin", 0o755)
	w.File("/bin/busybox", 0o755, []byte("not really busybox"))
	w.Symlink("bin/sh", "busybox")
	w.File("init", 0o755, []byte("#!/bin/sh\n"))
	w.File("empty", 0o644, nil)
	// Names of every length mod 4 exercise the padding.
	for i := 1; i <= 4; i++ {
		w.File(strings.Repeat("x", i), 0o600, []byte(strings.Repeat("d", i)))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCPIORoundTrip(t *testing.T) {
	got := parseNewc(t, sampleArchive(t))
	want := []cpioEntry{
		{"bin", cpioModeDir | 0o755, ""},
		{"bin/busybox", cpioModeFile | 0o755, "not really busybox"},
		{"bin/sh", cpioModeSymlink | 0o777, "busybox"},
		{"init", cpioModeFile | 0o755, "#!/bin/sh\n"},
		{"empty", cpioModeFile | 0o644, ""},
		{"x", cpioModeFile | 0o600, "d"},
		{"xx", cpioModeFile | 0o600, "dd"},
		{"xxx", cpioModeFile | 0o600, "ddd"},
		{"xxxx", cpioModeFile | 0o600, "dddd"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parsed archive (-want +got):\n%s", diff)
	}
}

func TestCPIODeterministic(t *testing.T) {
	if !bytes.Equal(sampleArchive(t), sampleArchive(t)) {
		t.Error("the same entries gave different archives; the initramfs cache key would never hit")
	}
}

// TestCPIOWithGNUCpio checks the archive against an independent reader,
// GNU cpio, when it is installed: list it, then extract it and compare.
func TestCPIOWithGNUCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed; TestCPIORoundTrip parses the archive instead")
	}
	archive := sampleArchive(t)
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	names := strings.Fields(string(out))
	want := []string{"bin", "bin/busybox", "bin/sh", "init", "empty", "x", "xx", "xxx", "xxxx"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("cpio -t (-want +got):\n%s", diff)
	}

	dir := t.TempDir()
	cmd = exec.Command("cpio", "-i", "--quiet", "--no-absolute-filenames", "-d")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(archive)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "bin/busybox")); err != nil || string(b) != "not really busybox" {
		t.Errorf("extracted bin/busybox = %q, %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("extracted bin/sh -> %q, %v; want -> busybox", target, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "init")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("extracted init: %v, %v; want mode 0755", st, err)
	}
}

func TestCPIORejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "/", "a/../../etc", cpioTrailer, "a\x00b"} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			w := newCPIOWriter(&bytes.Buffer{})
			if err := w.File(name, 0o644, nil); err == nil {
				t.Fatalf("File(%q) = nil error", name)
			}
			// The first error sticks, so a builder may check only Close.
			if err := w.Close(); err == nil {
				t.Error("Close after a bad entry = nil error")
			}
		})
	}
}

func TestCPIOAfterClose(t *testing.T) {
	w := newCPIOWriter(&bytes.Buffer{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Dir("late", 0o755); err == nil {
		t.Error("Dir after Close = nil error")
	}
}

func TestParseShowDepends(t *testing.T) {
	out := `builtin crc32c
insmod /lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio_ring.ko 
insmod /lib/modules/6.12.0-1-amd64/kernel/net/9p/9pnet.ko.xz 
insmod /lib/modules/6.1.0-56-amd64/kernel/net/netfilter/ipvs/ip_vs.ko conn_tab_bits=12
`
	got, err := parseShowDepends(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []moduleFile{
		{Name: "virtio_ring.ko", Path: "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio_ring.ko"},
		{Name: "9pnet.ko", Path: "/lib/modules/6.12.0-1-amd64/kernel/net/9p/9pnet.ko.xz"},
		{Name: "ip_vs.ko", Path: "/lib/modules/6.1.0-56-amd64/kernel/net/netfilter/ipvs/ip_vs.ko", Args: "conn_tab_bits=12"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseShowDepends (-want +got):\n%s", diff)
	}
	if _, err := parseShowDepends("modprobe: FATAL: Module nope not found\n"); err == nil {
		t.Error("an error line parsed without error")
	}
}

func TestVersionOrder(t *testing.T) {
	got := []string{"6.1.0-9-amd64", "6.10.1-amd64", "6.1.0-56-amd64", "5.10.0-30-amd64", "6.9.0-1-amd64"}
	slices.SortFunc(got, func(a, b string) int {
		switch {
		case versionLess(a, b):
			return -1
		case versionLess(b, a):
			return 1
		}
		return 0
	})
	want := []string{"5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-56-amd64", "6.9.0-1-amd64", "6.10.1-amd64"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sorted (-want +got):\n%s", diff)
	}
}
