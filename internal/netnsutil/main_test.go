package netnsutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"testing"

	"proxyrig/internal/leakcheck"
)

// TestMain fails the binary when the tests leave goroutines or descriptors
// behind: a namespace handle kept open keeps a deleted namespace alive.
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: creating network namespaces needs root")
		}
		t.Skip("needs root to create network namespaces")
	}
}

// TestEveryOperationReleasesItsDescriptors goes through every operation
// of the package on a scratch namespace, many times over, and deletes it
// again; the leak check in TestMain then proves that none of them keeps a
// namespace handle, netlink socket or pipe open.
func TestEveryOperationReleasesItsDescriptors(t *testing.T) {
	requireRoot(t)
	name := fmt.Sprintf("prx-nsutil-%d", os.Getpid())
	ns, err := Create(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if Exists(name) {
			if err := Delete(name); err != nil {
				t.Errorf("delete %s: %v", name, err)
			}
		}
	})
	for i := range 20 {
		if err := ns.Do(func() error {
			// A socket made inside stays in the namespace; closing it is
			// the caller's business, as here.
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			return l.Close()
		}); err != nil {
			t.Fatalf("Do #%d: %v", i, err)
		}
		h, err := ns.Handle()
		if err != nil {
			t.Fatalf("Handle #%d: %v", i, err)
		}
		if _, err := h.LinkList(); err != nil {
			t.Fatalf("LinkList #%d: %v", i, err)
		}
		h.Close()
		fd, err := ns.Fd()
		if err != nil {
			t.Fatalf("Fd #%d: %v", i, err)
		}
		fd.Close()
		if _, err := ns.Run(context.Background(), nil, "true"); err != nil {
			t.Fatalf("Run #%d: %v", i, err)
		}
		if err := ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
			t.Fatalf("Sysctl #%d: %v", i, err)
		}
		if v, err := ns.ReadSysctl("net.ipv4.ip_forward"); err != nil || v != "1" {
			t.Fatalf("ReadSysctl #%d: %q %v", i, v, err)
		}
	}
	names, err := List("prx-nsutil-")
	if err != nil || !slices.Contains(names, name) {
		t.Fatalf("List: %v %v, want it to hold %s", names, err, name)
	}
	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if Exists(name) {
		t.Errorf("%s still exists after Delete", name)
	}
}
