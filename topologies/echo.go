package topologies

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// Echo servers answer every connection (TCP, SCTP) or datagram (UDP) with
// one line, "<endpoint-name> <client-ip>:<client-port>\n", from which a
// probe learns which backend served it and what source address that backend
// saw (masqueraded or preserved).

// noSCTPNote is added to Info.Notes when SCTP endpoints cannot be served.
const noSCTPNote = "kernel lacks SCTP sockets: SCTP endpoints have no echo server"

// errNoSCTP means the kernel has no SCTP sockets (no CONFIG_IP_SCTP, or the
// module cannot be loaded).
var errNoSCTP = errors.New("kernel lacks SCTP sockets")

// echoLine formats the reply. IPv6 sources are bracketed ([2001:db8::1]:80)
// so the line parses with netip.ParseAddrPort.
func echoLine(name string, from netip.AddrPort) []byte {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	return []byte(name + " " + from.String() + "\n")
}

// ParseEchoLine splits an echo server's reply into the endpoint name and
// the client address the backend saw.
func ParseEchoLine(line string) (name string, seen netip.AddrPort, err error) {
	line = strings.TrimRight(line, "\r\n")
	i := strings.LastIndexByte(line, ' ')
	if i <= 0 || i == len(line)-1 {
		return "", netip.AddrPort{}, fmt.Errorf("echo line %q: want \"<name> <ip>:<port>\"", line)
	}
	name = line[:i]
	if strings.ContainsAny(name, " \t") {
		return "", netip.AddrPort{}, fmt.Errorf("echo line %q: name has spaces", line)
	}
	seen, err = netip.ParseAddrPort(line[i+1:])
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("echo line %q: %w", line, err)
	}
	return name, seen, nil
}

// freebind lets a socket bind an address before (or without) it being
// configured, so a server never races the address it serves.
func freebind(c syscall.RawConn, v6 bool) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	return errors.Join(err, serr)
}

func netFor(proto string, a netip.Addr) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

// echoServer is one listening socket.
type echoServer struct {
	key  serverKey
	name string
	stop func() error
	done chan struct{}
}

func (s *echoServer) close() {
	_ = s.stop()
	<-s.done
}

// startEcho opens the socket inside ns (it stays there) and serves it from
// an ordinary goroutine.
func startEcho(ns netnsutil.NS, key serverKey, name string) (*echoServer, error) {
	s := &echoServer{key: key, name: name, done: make(chan struct{})}
	v6 := key.addr.Addr().Is6()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error { return freebind(c, v6) }}
	var ln net.Listener
	var pc *net.UDPConn
	err := ns.Do(func() error {
		var err error
		switch key.proto {
		case model.TCP:
			ln, err = lc.Listen(context.Background(), netFor("tcp", key.addr.Addr()), key.addr.String())
		case model.UDP:
			var c net.PacketConn
			c, err = lc.ListenPacket(context.Background(), netFor("udp", key.addr.Addr()), key.addr.String())
			if err == nil {
				pc = c.(*net.UDPConn)
			}
		case model.SCTP:
			ln, err = listenSCTP(key.addr)
		default:
			err = fmt.Errorf("protocol %q has no echo server", key.proto)
		}
		return err
	})
	if err != nil {
		if errors.Is(err, errNoSCTP) {
			return nil, err
		}
		return nil, fmt.Errorf("echo server %s/%s in %s: %w", key.addr, key.proto, ns.Name, err)
	}
	if pc != nil {
		s.stop = pc.Close
		go func() { defer close(s.done); serveUDP(pc, name) }()
	} else {
		s.stop = ln.Close
		go func() { defer close(s.done); serveStream(ln, name) }()
	}
	return s, nil
}

// serveStream writes the line to each accepted connection and closes it:
// the server closes first, so TIME_WAIT stays on the server side and a
// client may reuse a fixed source port straight away.
func serveStream(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off rather than spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		var from netip.AddrPort
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			from = ta.AddrPort()
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(echoLine(name, from))
		_ = c.Close()
	}
}

func serveUDP(pc *net.UDPConn, name string) {
	buf := make([]byte, 65536)
	for {
		_, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. a stray ICMP error reported on the socket
		}
		_, _ = pc.WriteToUDPAddrPort(echoLine(name, from), from)
	}
}

func sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
}

func isNoSCTP(err error) bool {
	return errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ESOCKTNOSUPPORT)
}

// listenSCTP opens a one-to-one (SOCK_STREAM) SCTP listener. The standard
// library has no SCTP, but a listening SOCK_STREAM socket of any protocol
// can be handed to net.FileListener, which then accepts through the
// runtime poller like TCP. Must run inside the target namespace.
func listenSCTP(a netip.AddrPort) (net.Listener, error) {
	af := unix.AF_INET
	if a.Addr().Is6() {
		af = unix.AF_INET6
	}
	fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		if isNoSCTP(err) {
			return nil, errNoSCTP
		}
		return nil, fmt.Errorf("sctp socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "sctp-listener")
	defer f.Close() // FileListener dups the descriptor
	if af == unix.AF_INET6 {
		err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1)
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}
	if err == nil {
		err = unix.Bind(fd, sockaddr(a))
	}
	if err == nil {
		err = unix.Listen(fd, 128)
	}
	if err != nil {
		return nil, fmt.Errorf("sctp listen %s: %w", a, err)
	}
	return net.FileListener(f)
}

// sctpSupported asks the kernel for an SCTP socket inside ns.
func sctpSupported(ns netnsutil.NS) (bool, error) {
	ok := true
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			if isNoSCTP(err) {
				ok = false
				return nil
			}
			return err
		}
		return unix.Close(fd)
	})
	return ok, err
}

// syncServers starts the servers p wants that are not running (restarting
// any that answer with the wrong name); with prune it instead stops those p
// no longer wants.
func (l *Lab) syncServers(ctx context.Context, p *plan, prune bool) error {
	l.mu.RLock()
	sctp := l.sctp
	var start []serverKey
	var stop []*echoServer
	for k, name := range p.servers {
		s, ok := l.servers[k]
		if prune {
			continue
		}
		if !ok || s.name != name {
			start = append(start, k)
		}
	}
	if prune {
		for k, s := range l.servers {
			if name, ok := p.servers[k]; !ok || name != s.name {
				stop = append(stop, s)
			}
		}
	}
	l.mu.RUnlock()

	for _, s := range stop {
		s.close()
		l.mu.Lock()
		if l.servers[s.key] == s {
			delete(l.servers, s.key)
		}
		l.mu.Unlock()
	}
	sort.Slice(start, func(i, j int) bool {
		a, b := start[i], start[j]
		if a.ns != b.ns {
			return a.ns < b.ns
		}
		if c := a.addr.Compare(b.addr); c != 0 {
			return c < 0
		}
		return a.proto < b.proto
	})
	var errs []error
	for _, k := range start {
		if err := ctx.Err(); err != nil {
			return err
		}
		if k.proto == model.SCTP && !sctp {
			l.note(noSCTPNote)
			continue
		}
		l.mu.Lock()
		old := l.servers[k]
		delete(l.servers, k)
		l.mu.Unlock()
		if old != nil {
			old.close()
		}
		s, err := startEcho(netnsutil.NS{Name: k.ns}, k, p.servers[k])
		if errors.Is(err, errNoSCTP) {
			l.mu.Lock()
			l.sctp = false
			sctp = false
			l.mu.Unlock()
			l.note(noSCTPNote)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.mu.Lock()
		l.servers[k] = s
		l.mu.Unlock()
	}
	return errors.Join(errs...)
}

// stopServersIn stops every echo server in namespace ns ("" = all) and
// waits for their goroutines.
func (l *Lab) stopServersIn(ns string) {
	l.mu.Lock()
	var stop []*echoServer
	for k, s := range l.servers {
		if ns == "" || k.ns == ns {
			stop = append(stop, s)
			delete(l.servers, k)
		}
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range stop {
		wg.Add(1)
		go func() { defer wg.Done(); s.close() }()
	}
	wg.Wait()
}
