// Package netnsutil runs work inside network namespaces without moving the
// whole process: every call locks an OS thread, switches only that thread,
// and switches it back. A thread that cannot be switched back is never
// returned to the Go scheduler (it stays locked and dies with its goroutine),
// the same rule cilium/ebpf's test helpers follow.
package netnsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// BindDir is where named namespaces live, as with `ip netns add`.
const BindDir = "/run/netns"

// NS is a named network namespace pinned at /run/netns/<Name>.
type NS struct {
	Name string
}

// Path is the bind-mount path of the namespace.
func (n NS) Path() string { return filepath.Join(BindDir, n.Name) }

// Create makes a new named namespace without ever entering it from the
// calling thread's point of view. Equivalent to: ip netns add <name>.
func Create(name string) (NS, error) {
	if err := os.MkdirAll(BindDir, 0o755); err != nil {
		return NS{}, err
	}
	var res NS
	err := onNewThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		h.Close()
		if err := netns.Set(orig); err != nil {
			return errThreadTainted
		}
		res = NS{Name: name}
		return nil
	})
	return res, err
}

// Exists reports whether the named namespace is present.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(BindDir, name))
	return err == nil
}

// Delete removes a named namespace. Its links disappear with it once no
// process or open fd holds it. Equivalent to: ip netns delete <name>.
// Deleting a namespace that does not exist is not an error.
func Delete(name string) error {
	err := netns.DeleteNamed(name)
	if err != nil && (errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT)) {
		return nil
	}
	if err != nil {
		// A half-made bind mount (crash between mkdir and mount) leaves a plain file.
		p := filepath.Join(BindDir, name)
		_ = unix.Unmount(p, unix.MNT_DETACH)
		if rmErr := os.Remove(p); rmErr == nil || errors.Is(rmErr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// List returns the names of namespaces under /run/netns that start with prefix.
func List(prefix string) ([]string, error) {
	ents, err := os.ReadDir(BindDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

var errThreadTainted = errors.New("could not restore the thread's network namespace")

// onNewThread runs fn on a locked OS thread. If fn reports that it could not
// restore the namespace, the thread is left locked so the runtime discards it.
func onNewThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		if !errors.Is(err, errThreadTainted) {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Do runs fn on a locked OS thread that has entered the namespace. Sockets
// created inside fn stay in the namespace for their whole life, so a
// listener opened here can be served from any goroutine afterwards.
func (n NS) Do(fn func() error) error {
	target, err := netns.GetFromPath(n.Path())
	if err != nil {
		return fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	var fnErr error
	err = onNewThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter netns %s: %w", n.Name, err)
		}
		fnErr = fn()
		if err := netns.Set(orig); err != nil {
			return errThreadTainted
		}
		return nil
	})
	if err != nil {
		return err
	}
	return fnErr
}

// Handle returns a netlink handle bound to the namespace. The caller closes it.
// Equivalent to: ip -n <name> ...
func (n NS) Handle() (*netlink.Handle, error) {
	target, err := netns.GetFromPath(n.Path())
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	h, err := netlink.NewHandleAt(target)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.Name, err)
	}
	return h, nil
}

// Fd opens the namespace and returns its handle; the caller closes it.
func (n NS) Fd() (netns.NsHandle, error) { return netns.GetFromPath(n.Path()) }

// Run executes a command inside the namespace and returns its combined
// output. stdin may be nil. The child is forked from a thread that sits in
// the namespace, so it inherits it; nothing else about the process changes.
// Equivalent to: ip netns exec <name> <argv...>
func (n NS) Run(ctx context.Context, stdin []byte, argv ...string) ([]byte, error) {
	var out []byte
	err := n.Do(func() error {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		if stdin != nil {
			cmd.Stdin = strings.NewReader(string(stdin))
		}
		var err error
		out, err = cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s (in netns %s): %w: %s", strings.Join(argv, " "), n.Name, err, strings.TrimSpace(string(out)))
		}
		return nil
	})
	return out, err
}

// Sysctl writes a value under /proc/sys from inside the namespace, so
// per-netns keys (net.ipv4.*, net.netfilter.*) land in it and nowhere else.
// key uses dots: "net.ipv4.ip_forward".
func (n NS) Sysctl(key, value string) error {
	return n.Do(func() error { return WriteSysctl(key, value) })
}

// WriteSysctl writes /proc/sys/<key> for the calling thread's namespace.
func WriteSysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// ReadSysctl reads a sysctl inside the namespace.
func (n NS) ReadSysctl(key string) (string, error) {
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}
