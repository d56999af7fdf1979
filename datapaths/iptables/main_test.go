package iptables

import (
	"os"
	"testing"

	"proxyrig/internal/leakcheck"
)

// TestMain fails the binary when the tests, every lab and datapath closed,
// leave goroutines or descriptors (namespace handles, netlink and other
// sockets, pipes of helper processes) behind.
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }
