package topologies

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// Scale-mode echo servers: one listener per (port, protocol) in a backend
// namespace, bound to 0.0.0.0, answering for every local endpoint address.
// The answer is the usual echo line; the name is ScaleEndpointName of the
// address and port the connection or datagram arrived on (getsockname for
// TCP, IP_PKTINFO for UDP).
//
// UDP datagrams whose payload starts with "blast" are counted and not
// answered: a packet-rate measurement then costs one packet per datagram,
// not two, and the counter says how many arrived.

// ScaleCounters are totals since Build, over every backend of a scale lab.
type ScaleCounters struct {
	TCPAccepted uint64 `json:"tcpAccepted"`
	UDPReceived uint64 `json:"udpReceived"`
	UDPBlast    uint64 `json:"udpBlast"` // of UDPReceived: "blast" datagrams, not answered
}

func (c *ScaleCounters) add(o ScaleCounters) {
	c.TCPAccepted += o.TCPAccepted
	c.UDPReceived += o.UDPReceived
	c.UDPBlast += o.UDPBlast
}

type scalePort struct {
	port  uint16
	proto model.Protocol
}

type scaleBackend struct {
	ns netnsutil.NS

	mu      sync.Mutex
	servers map[scalePort]*scaleServer

	tcpAccepted, udpReceived, udpBlast atomic.Uint64
}

func (b *scaleBackend) counters() ScaleCounters {
	return ScaleCounters{TCPAccepted: b.tcpAccepted.Load(), UDPReceived: b.udpReceived.Load(), UDPBlast: b.udpBlast.Load()}
}

type scaleServer struct {
	stop func() error
	done chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]bool // open rr connections, closed on stop
}

func (s *scaleServer) close() {
	_ = s.stop()
	<-s.done
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
}

func (b *scaleBackend) stop() {
	b.mu.Lock()
	servers := b.servers
	b.servers = map[scalePort]*scaleServer{}
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); s.close() }()
	}
	wg.Wait()
}

// ensureServers starts, in every backend, a server for each (port,
// protocol) that c's endpoints on that node use and that is not running
// yet, plus the request/response server on ScaleRRPort. Servers are never
// stopped before Close: an address that no endpoint uses any more still
// answers, which is what lets a probe tell "the datapath still sends to the
// removed endpoint" from "the endpoint is gone".
func (l *ScaleLab) ensureServers(c *model.Cluster) error {
	want := map[string]map[scalePort]bool{}
	first := l.plan.nodes[0].name
	for _, n := range l.plan.nodes {
		want[n.name] = map[scalePort]bool{{ScaleRRPort, model.TCP}: true}
	}
	for _, s := range c.Services {
		for _, sp := range s.Ports {
			for _, ep := range sp.Endpoints {
				node := ep.NodeName
				if node == "" {
					node = first
				}
				if w := want[node]; w != nil {
					w[scalePort{uint16(ep.Port), sp.Protocol}] = true
				}
			}
		}
	}
	var errs []error
	for node, ports := range want {
		l.mu.Lock()
		b := l.backends[node]
		l.mu.Unlock()
		if b == nil {
			continue
		}
		keys := make([]scalePort, 0, len(ports))
		for k := range ports {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].port != keys[j].port {
				return keys[i].port < keys[j].port
			}
			return keys[i].proto < keys[j].proto
		})
		for _, k := range keys {
			b.mu.Lock()
			_, running := b.servers[k]
			b.mu.Unlock()
			if running {
				continue
			}
			s, err := b.start(k)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			b.mu.Lock()
			b.servers[k] = s
			b.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// setPktinfo asks for each datagram's destination address (IP_PKTINFO), so
// the reply can name the endpoint and leave from that very address.
func setPktinfo(c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	})
	return errors.Join(err, serr)
}

func (b *scaleBackend) start(k scalePort) (*scaleServer, error) {
	s := &scaleServer{done: make(chan struct{}), conns: map[net.Conn]bool{}}
	addr := fmt.Sprintf("0.0.0.0:%d", k.port)
	var ln net.Listener
	var pc *net.UDPConn
	err := b.ns.Do(func() error {
		var err error
		switch k.proto {
		case model.TCP:
			ln, err = net.Listen("tcp4", addr)
		case model.UDP:
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error { return setPktinfo(c) }}
			var c net.PacketConn
			c, err = lc.ListenPacket(context.Background(), "udp4", addr)
			if err == nil {
				pc = c.(*net.UDPConn)
			}
		default:
			err = fmt.Errorf("scale mode has no %s echo server", k.proto)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("echo server %s/%s in %s: %w", addr, k.proto, b.ns.Name, err)
	}
	if pc != nil {
		s.stop = pc.Close
		go func() { defer close(s.done); b.serveUDP(pc, k.port) }()
	} else {
		s.stop = ln.Close
		go func() { defer close(s.done); b.serveTCP(s, ln, k.port == ScaleRRPort) }()
	}
	return s, nil
}

func (b *scaleBackend) serveTCP(s *scaleServer, ln net.Listener, rr bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and friends
			continue
		}
		b.tcpAccepted.Add(1)
		local, _ := c.LocalAddr().(*net.TCPAddr)
		remote, _ := c.RemoteAddr().(*net.TCPAddr)
		var line []byte
		if local != nil && remote != nil {
			line = echoLine(ScaleEndpointName(local.AddrPort()), remote.AddrPort())
		}
		if rr {
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			go func() {
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					_ = c.Close()
				}()
				serveRR(c, line)
			}()
			continue
		}
		// Answer and close at once, on this goroutine: the server closes
		// first, so TIME_WAIT stays here and clients never run out of ports.
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(line)
		_ = c.Close()
	}
}

// serveRR sends the echo line, then echoes every byte back until the
// client closes: request/response on an established connection.
func serveRR(c net.Conn, line []byte) {
	if _, err := c.Write(line); err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

var blastPayload = []byte(blastPrefix)

func (b *scaleBackend) serveUDP(pc *net.UDPConn, port uint16) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	sendOOB := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&sendOOB[0]))
	h.Level = unix.IPPROTO_IP
	h.Type = unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&sendOOB[unix.CmsgLen(0)]))
	for {
		var n, oobn int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			return // closed
		}
		if rerr != nil {
			continue // e.g. an ICMP error queued on the socket
		}
		b.udpReceived.Add(1)
		if bytes.HasPrefix(buf[:n], blastPayload) {
			b.udpBlast.Add(1)
			continue
		}
		dst, ok := pktinfoDst(oob[:oobn])
		if !ok {
			continue
		}
		line := echoLine(ScaleEndpointName(netip.AddrPortFrom(dst, port)), fromSockaddr(from))
		pi.Spec_dst = dst.As4()
		var werr error
		_ = rc.Write(func(fd uintptr) bool {
			werr = unix.Sendmsg(int(fd), line, sendOOB, from, unix.MSG_DONTWAIT)
			return !errors.Is(werr, unix.EAGAIN)
		})
	}
}

// pktinfoDst finds the IP_PKTINFO header destination in a control message.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return netip.Addr{}, false
		}
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && l >= unix.CmsgLen(unix.SizeofInet4Pktinfo) {
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return netip.AddrFrom4(pi.Addr), true
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return netip.Addr{}, false
}
