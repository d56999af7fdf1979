package vm

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
)

// Where the runner looks for what it needs. Variables, not constants, only
// so unit tests can point them at a scratch tree.
var (
	modulesRoot = "/lib/modules"
	bootDir     = "/boot"
	// busyboxPaths are tried in order; busybox-static installs /bin/busybox
	// (on merged-/usr systems that is /usr/bin/busybox too).
	busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}
)

// qemuBinary is the emulator the runner starts.
const qemuBinary = "qemu-system-x86_64"

// bootModules are what the initramfs must insert before it can mount the
// host's root: the virtio PCI transport, 9p over virtio, and overlayfs (the
// guest's /tmp is a tmpfs overlay on the host's /tmp, so binaries that `go
// test` or `go run` left there still run inside). Their dependencies are
// resolved per kernel with modprobe --show-depends; on Debian's 6.1 that
// gives virtio_ring, virtio, virtio_pci_modern_dev, virtio_pci_legacy_dev,
// virtio_pci, 9pnet, 9pnet_virtio, netfs, fscache, 9p, overlay.
//
// Everything else (ip_vs, sctp, dummy, sch_netem, …) is loaded after
// switch_root by the host's own modprobe, where the kernel's autoloader
// works too.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"}

// ErrNotSupported is datapaths.ErrNotSupported: every "this machine cannot
// run the VM" error matches it with errors.Is, so callers skip with the
// reason rather than fail.
var ErrNotSupported = datapaths.ErrNotSupported

// NotSupportedError lists what the VM runner needs and this machine lacks.
type NotSupportedError struct {
	Missing []string // each says what is missing and how to get it
}

func (e *NotSupportedError) Error() string {
	return "VM runner not supported on this machine: " + strings.Join(e.Missing, "; ")
}

// Is makes errors.Is(err, datapaths.ErrNotSupported) true.
func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }

// Check reports whether this machine can run the VM: the qemu binary, a
// kernel image with its modules, a static busybox and modprobe. It returns
// a *NotSupportedError naming everything missing, or nil.
//
// KVM is not needed and not used: the runner always emulates (TCG).
func Check() error {
	var missing []string
	if _, err := exec.LookPath(qemuBinary); err != nil {
		missing = append(missing, qemuBinary+" not found (apt-get install qemu-system-x86)")
	}
	if ks, err := Kernels(); err != nil || len(ks) == 0 {
		why := "no kernel with both /boot/vmlinuz-<ver> and /lib/modules/<ver>/modules.dep (apt-get install linux-image-amd64)"
		if err != nil {
			why += ": " + err.Error()
		}
		missing = append(missing, why)
	}
	if _, err := findBusybox(); err != nil {
		missing = append(missing, err.Error()+" (apt-get install busybox-static)")
	}
	if _, err := exec.LookPath("modprobe"); err != nil {
		missing = append(missing, "modprobe not found (apt-get install kmod)")
	}
	if len(missing) > 0 {
		return &NotSupportedError{Missing: missing}
	}
	return nil
}

// Kernels lists the installed kernels the runner can boot, newest first:
// versions with both /boot/vmlinuz-<ver> and /lib/modules/<ver>/modules.dep.
//
// Equivalent to: ls /lib/modules
func Kernels() ([]string, error) {
	ents, err := os.ReadDir(modulesRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	var out []string
	for _, e := range ents {
		ver := e.Name()
		if !e.IsDir() && e.Type()&os.ModeSymlink == 0 {
			continue
		}
		if usableKernel(ver) == nil {
			out = append(out, ver)
		}
	}
	sort.Slice(out, func(i, j int) bool { return versionLess(out[j], out[i]) })
	return out, nil
}

func usableKernel(ver string) error {
	img := kernelImage(ver)
	if st, err := os.Stat(img); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("kernel %s: no image %s (apt-get install linux-image-amd64)", ver, img)
	}
	dep := filepath.Join(modulesRoot, ver, "modules.dep")
	if _, err := os.Stat(dep); err != nil {
		return fmt.Errorf("kernel %s: no %s (run depmod %s)", ver, dep, ver)
	}
	return nil
}

func kernelImage(ver string) string { return filepath.Join(bootDir, "vmlinuz-"+ver) }

// hostKernel is the running kernel's release (uname -r).
func hostKernel() string {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return ""
	}
	return unix.ByteSliceToString(uts.Release[:])
}

// resolveKernel picks the kernel to boot: the requested one, or the newest
// installed kernel that is not the running host kernel. The host's own
// kernel is passed over because the point of the VM is a kernel with what
// the host's lacks.
func resolveKernel(want string) (string, error) {
	if want != "" {
		if strings.ContainsAny(want, "/\x00") || want == "." || want == ".." {
			return "", fmt.Errorf("kernel version %q is not a version", want)
		}
		if err := usableKernel(want); err != nil {
			return "", &NotSupportedError{Missing: []string{err.Error()}}
		}
		return want, nil
	}
	ks, err := Kernels()
	if err != nil {
		return "", err
	}
	host := hostKernel()
	for _, k := range ks {
		if k != host {
			return k, nil
		}
	}
	return "", &NotSupportedError{Missing: []string{fmt.Sprintf(
		"no installed kernel other than the running one (%s) under /boot and /lib/modules (apt-get install linux-image-amd64)", host)}}
}

// versionLess orders kernel releases by their numeric fields, so 6.10 sorts
// after 6.9 and 6.1.0-56 after 6.1.0-9.
func versionLess(a, b string) bool {
	fa, fb := versionFields(a), versionFields(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		if fa[i] != fb[i] {
			na, ea := strconv.Atoi(fa[i])
			nb, eb := strconv.Atoi(fb[i])
			if ea == nil && eb == nil {
				return na < nb
			}
			return fa[i] < fb[i]
		}
	}
	return len(fa) < len(fb)
}

func versionFields(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' })
}

// findBusybox returns a statically linked busybox. A dynamic one would not
// run in the initramfs, which holds no C library.
func findBusybox() (string, error) {
	for _, p := range busyboxPaths {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p, nil
		}
	}
	return "", fmt.Errorf("no statically linked busybox at %s", strings.Join(busyboxPaths, " or "))
}

// moduleFile is one module the initramfs inserts.
type moduleFile struct {
	Name string // file name inside the initramfs: "9pnet_virtio.ko"
	Path string // on the host
	Args string // module parameters modprobe's configuration adds, if any
}

// resolveModules lists the files of mods and their dependencies in load
// order, each once, skipping modules built into the kernel.
//
// Equivalent to: modprobe -S <ver> --show-depends <mod>, for each mod.
func resolveModules(ctx context.Context, ver string, mods []string) ([]moduleFile, error) {
	seen := map[string]bool{}
	var out []moduleFile
	for _, m := range mods {
		cmd := exec.CommandContext(ctx, "modprobe", "-S", ver, "--show-depends", m)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("modprobe -S %s --show-depends %s: %w: %s", ver, m, err, strings.TrimSpace(stderr.String()))
		}
		files, err := parseShowDepends(string(b))
		if err != nil {
			return nil, fmt.Errorf("modprobe -S %s --show-depends %s: %w", ver, m, err)
		}
		for _, f := range files {
			if !seen[f.Path] {
				seen[f.Path] = true
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// parseShowDepends reads modprobe --show-depends output: one "insmod
// <path> [params]" line per module to load, in order, and "builtin <name>"
// for what the kernel already has.
func parseShowDepends(out string) ([]moduleFile, error) {
	var files []moduleFile
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "builtin ") {
			continue
		}
		rest, ok := strings.CutPrefix(line, "insmod ")
		if !ok {
			return nil, fmt.Errorf("unexpected line %q", line)
		}
		path, args, _ := strings.Cut(strings.TrimSpace(rest), " ")
		base := filepath.Base(path)
		// The initramfs keeps one flat directory and decompresses modules
		// on the host, so the name is always <module>.ko.
		for _, ext := range []string{".xz", ".zst", ".gz"} {
			base = strings.TrimSuffix(base, ext)
		}
		files = append(files, moduleFile{Name: base, Path: path, Args: strings.TrimSpace(args)})
	}
	return files, nil
}
