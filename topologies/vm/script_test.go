package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"proxyrig/datapaths"
)

var testMods = []moduleFile{
	{Name: "virtio_ring.ko"}, {Name: "virtio.ko"}, {Name: "9pnet.ko"},
	{Name: "9pnet_virtio.ko"}, {Name: "9p.ko", Args: "debug=0"},
}

// syntaxCheck runs sh -n on a script: it parses without running.
func syntaxCheck(t *testing.T, shell, script string) {
	t.Helper()
	if _, err := exec.LookPath(shell); err != nil {
		t.Logf("%s not installed; syntax not checked with it", shell)
		return
	}
	args := []string{"-n"}
	if filepath.Base(shell) == "busybox" {
		args = []string{"sh", "-n"}
	}
	cmd := exec.Command(shell, args...)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s -n: %v\n%s\nscript:\n%s", shell, err, out, script)
	}
}

func TestInitScript(t *testing.T) {
	s := initScript(testMods)
	syntaxCheck(t, "sh", s)
	syntaxCheck(t, "busybox", s)

	// Modules are inserted in the order given, before the first 9p mount.
	var insmods []string
	for _, line := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(line, "insmod /lib/modules/"); ok {
			insmods = append(insmods, strings.Fields(rest)[0])
		}
	}
	want := []string{"virtio_ring.ko", "virtio.ko", "9pnet.ko", "9pnet_virtio.ko", "9p.ko"}
	if diff := cmp.Diff(want, insmods); diff != "" {
		t.Errorf("insmod order (-want +got):\n%s", diff)
	}
	if !strings.Contains(s, "insmod /lib/modules/9p.ko debug=0 ||") {
		t.Error("module parameters are not passed to insmod")
	}
	for _, must := range []string{
		"mount -t proc proc /proc",
		"mount -t devtmpfs devtmpfs /dev",
		"mount -t 9p -o ro,trans=virtio,version=9p2000.L", // host root read-only
		" hostroot /newroot ",
		" results /newroot/run/prx-vm ",
		"exec switch_root /newroot /run/prx-vm-bin/busybox sh /run/prx-vm/guest.sh",
		"echo o > /proc/sysrq-trigger", // every failure powers off
	} {
		if !strings.Contains(s, must) {
			t.Errorf("init script lacks %q", must)
		}
	}
	if strings.Index(s, "insmod") > strings.Index(s, "mount -t 9p") {
		t.Error("9p is mounted before its modules are inserted")
	}
	// A chroot would leave the kernel's module autoloader pointing at the
	// initramfs, where no modprobe exists (DESIGN.md §5).
	if strings.Contains(s, "chroot ") {
		t.Error("init script uses chroot; it must switch_root")
	}
}

func TestGuestScript(t *testing.T) {
	r := guestRun{
		Argv:     []string{"/usr/bin/printf", "%s|", "it's", "two words", "$HOME", "`x`"},
		Dir:      "/work/it's here",
		Env:      map[string]string{"PATH": "/usr/bin:/bin", "B": "b", "A": "a'q"},
		Modules:  []string{"ip_vs", "sctp"},
		Modprobe: "/usr/sbin/modprobe",
		EnvBin:   "/usr/bin/env",
	}
	s := guestScriptText(r)
	syntaxCheck(t, "sh", s)
	syntaxCheck(t, "busybox", s)
	for _, must := range []string{
		`'/usr/sbin/modprobe' -a 'ip_vs' 'sctp'`,
		`cd '/work/it'\''s here' || fail`,
		// sorted, quoted, exactly this environment
		`'/usr/bin/env' -i 'A=a'\''q' 'B=b' 'PATH=/usr/bin:/bin' '/usr/bin/printf' '%s|' 'it'\''s' 'two words' '$HOME' '` + "`x`" + `' </dev/null >"$R/stdout" 2>"$R/stderr"`,
		`echo $? > "$R/exitcode.tmp"`,
		`mv "$R/exitcode.tmp" "$R/exitcode"`,
		"echo o > /proc/sysrq-trigger",
	} {
		if !strings.Contains(s, must) {
			t.Errorf("guest script lacks %q:\n%s", must, s)
		}
	}
	if strings.Index(s, "modprobe") > strings.Index(s, "-i 'A=") {
		t.Error("modules are loaded after the command runs")
	}
	noMods := guestScriptText(guestRun{Argv: []string{"true"}, Dir: "/", EnvBin: "/usr/bin/env"})
	if strings.Contains(noMods, "-a") {
		t.Errorf("guest script runs modprobe with no modules:\n%s", noMods)
	}
}

// TestShQuote runs the quoted words through a real shell and checks that
// every byte survives.
func TestShQuote(t *testing.T) {
	words := []string{"plain", "", "it's", "two words", "$HOME", "`id`", `back\slash`, "new\nline", `"dq"`, "'"}
	cmd := exec.Command("sh", "-c", "for a in "+quoteAll(words)+`; do printf '%s\0' "$a"; done`)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if diff := cmp.Diff(words, got); diff != "" {
		t.Errorf("words after the shell (-want +got):\n%s", diff)
	}
}

func TestQemuArgs(t *testing.T) {
	args := qemuArgs("prx-vm-123", Config{}, "/boot/vmlinuz-x", "/cache/initrd.gz", "/tmp/a,b/prx-vm-123")
	line := strings.Join(args, " ")
	for _, must := range []string{
		"-name prx-vm-123,process=prx-vm-123",
		"-accel tcg,thread=multi",
		"-m 2048", "-smp 2",
		"-no-reboot",
		"-kernel /boot/vmlinuz-x", "-initrd /cache/initrd.gz",
		"console=ttyS0 quiet panic=-1",
		"local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"local,path=/tmp/a,,b/prx-vm-123,mount_tag=results", // a comma in a path is doubled
		"-nodefaults", // no NIC: the guest has no network to the outside
	} {
		if !strings.Contains(line, must) {
			t.Errorf("qemu args lack %q:\n%s", must, line)
		}
	}
	if slices.Contains(args, "-enable-kvm") || strings.Contains(line, "accel kvm") {
		t.Error("KVM requested; it does not work on this host")
	}
	args = qemuArgs("n", Config{Memory: 512, CPUs: 1}, "k", "i", "r")
	if line := strings.Join(args, " "); !strings.Contains(line, "-m 512") || !strings.Contains(line, "-smp 1") {
		t.Errorf("Memory/CPUs ignored: %s", line)
	}
}

func TestGuestEnv(t *testing.T) {
	t.Setenv("CI", "true")
	t.Setenv("PATH", "/x/bin:/usr/bin")
	env := guestEnv(map[string]string{"FOO": "bar", EnvEmulated: "0"}, "6.1.0-56-amd64")
	for k, want := range map[string]string{
		"CI": "true", "PATH": "/x/bin:/usr/bin", "FOO": "bar",
		EnvEmulated: "1", EnvKernel: "6.1.0-56-amd64",
	} {
		if env[k] != want {
			t.Errorf("guest env %s=%q, want %q", k, env[k], want)
		}
	}
}

func TestEmulated(t *testing.T) {
	t.Setenv(EnvEmulated, "")
	if Emulated() {
		t.Error("Emulated() with the variable empty")
	}
	t.Setenv(EnvEmulated, "1")
	if !Emulated() {
		t.Error("!Emulated() with the variable set")
	}
}

// TestCheckMissing points the runner at an empty tree: no kernel.
func TestCheckMissing(t *testing.T) {
	saveM, saveB := modulesRoot, bootDir
	t.Cleanup(func() { modulesRoot, bootDir = saveM, saveB })
	modulesRoot, bootDir = t.TempDir(), t.TempDir()
	err := Check()
	if !errors.Is(err, datapaths.ErrNotSupported) {
		t.Fatalf("Check() = %v, want an error matching datapaths.ErrNotSupported", err)
	}
	if !strings.Contains(err.Error(), "linux-image-amd64") {
		t.Errorf("Check() = %q, want it to say how to get a kernel", err)
	}
	if _, err := Run(context.Background(), Config{}, []string{"true"}, nil, nil); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Run without a kernel = %v, want ErrNotSupported", err)
	}
}

func TestKernelsListsOnlyBootable(t *testing.T) {
	saveM, saveB := modulesRoot, bootDir
	t.Cleanup(func() { modulesRoot, bootDir = saveM, saveB })
	modulesRoot, bootDir = t.TempDir(), t.TempDir()
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.0-1-amd64", "headers-only"} {
		os.MkdirAll(filepath.Join(modulesRoot, v), 0o755)
		if v != "headers-only" {
			os.WriteFile(filepath.Join(modulesRoot, v, "modules.dep"), nil, 0o644)
			os.WriteFile(filepath.Join(bootDir, "vmlinuz-"+v), nil, 0o644)
		}
	}
	got, err := Kernels()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"6.12.0-1-amd64", "6.1.0-56-amd64", "6.1.0-9-amd64"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Kernels (-want +got):\n%s", diff)
	}
	if _, err := resolveKernel("../etc"); err == nil {
		t.Error("a kernel version with a slash was accepted")
	}
}

// fakeBzImage wraps payload in the smallest header bzPayload reads.
func fakeBzImage(payload []byte, size uint32) []byte {
	img := make([]byte, 5*512)
	img[bootSetupSects] = 4
	copy(img[bootHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[bootVersion:], 0x20f)
	binary.LittleEndian.PutUint32(img[bootPayloadOffset:], 16)
	full := binary.LittleEndian.AppendUint32(append([]byte{}, payload...), size)
	binary.LittleEndian.PutUint32(img[bootPayloadLength:], uint32(len(full)))
	img = append(img, make([]byte, 16)...)
	return append(img, full...)
}

func TestBzPayload(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("\x7fELF pretend kernel"))
	zw.Close()
	img := fakeBzImage(gz.Bytes(), 19)
	payload, size, err := bzPayload(img)
	if err != nil {
		t.Fatal(err)
	}
	if size != 19 {
		t.Errorf("size = %d, want 19", size)
	}
	got, err := decompressKernel(context.Background(), payload)
	if err != nil || string(got) != "\x7fELF pretend kernel" {
		t.Errorf("decompressKernel = %q, %v", got, err)
	}
	if err := hasPVHEntry(got); err == nil {
		t.Error("hasPVHEntry accepted a non-ELF")
	}
	if _, _, err := bzPayload([]byte("MZ not a kernel")); err == nil {
		t.Error("bzPayload accepted a non-bzImage")
	}
	if _, err := decompressKernel(context.Background(), []byte("LZ4?")); err == nil {
		t.Error("decompressKernel accepted an unknown compressor")
	}
}

func TestLineLogger(t *testing.T) {
	var logged bytes.Buffer
	l := newLineLogger(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})), "vm console", 2)
	l.Write([]byte("one\r\ntw"))
	l.Write([]byte("o\nthree\nfour"))
	l.Flush()
	if got, want := l.Tail(), "  vm console: three\n  vm console: four\n"; got != want {
		t.Errorf("Tail() = %q, want %q", got, want)
	}
	if n := strings.Count(logged.String(), "level=DEBUG"); n != 4 {
		t.Errorf("logged %d debug lines, want 4:\n%s", n, logged.String())
	}
}

// TestCleanupFakeQemu starts a process that looks like a leftover qemu of
// the runner and a leftover results directory, both with a marker unique
// to this test (so it cannot touch a real VM), and checks cleanup removes
// both and leaves other processes alone.
func TestCleanupFakeQemu(t *testing.T) {
	marker := NamePrefix + "cleanuptest-" + strings.ReplaceAll(t.Name(), "/", "-") + "-"
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	// The shells wait in the builtin read on a pipe that never delivers:
	// a forked child would carry the fake's command line for a moment and
	// be killed too.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); pw.Close() })
	fake := &exec.Cmd{Path: sh, Args: []string{"qemu-system-x86_64", "-c", "read x", "-name", marker + "1"}, Stdin: pr}
	bystander := &exec.Cmd{Path: sh, Args: []string{"sh", "-c", "read x", marker + "2"}, Stdin: pr}
	for _, c := range []*exec.Cmd{fake, bystander} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	// Start returns after fork; until exec, /proc shows the test binary's
	// command line, so wait for the fake's own.
	for _, c := range []*exec.Cmd{fake, bystander} {
		for i := 0; !slices.Equal(cmdline(c.Process.Pid), c.Args); i++ {
			if i == 500 {
				t.Fatalf("pid %d never showed command line %q", c.Process.Pid, c.Args)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waited := make(chan error, 1)
	go func() { waited <- fake.Wait() }()
	dir := filepath.Join(os.TempDir(), marker+"dir")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	removed, err := cleanup(marker)
	if err != nil {
		t.Fatal(err)
	}
	<-waited
	want := []string{"dir " + dir, "process " + strconv.Itoa(fake.Process.Pid) + " " + marker + "1"}
	if diff := cmp.Diff(want, removed); diff != "" {
		t.Errorf("cleanup removed (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	if !processAlive(bystander.Process.Pid) {
		t.Error("cleanup killed a non-qemu process that mentions the marker")
	}
	// Twice is safe and finds nothing.
	if removed, err := cleanup(marker); err != nil || len(removed) != 0 {
		t.Errorf("second cleanup = %v, %v; want nothing", removed, err)
	}
}
