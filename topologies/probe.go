package topologies

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"proxyrig/internal/netnsutil"
)

const defaultProbeTimeout = 2 * time.Second

var defaultUDPPayload = []byte("probe\n")

// Probe makes one TCP connection, UDP exchange or SCTP association from
// inside ns to spec.Dst and reports what came back. The socket is created
// inside the namespace; nothing of the probe touches any other.
//
// Outcomes: an echo line => Answered; ECONNREFUSED, a reset, or ICMP
// host/net unreachable => Refused; silence until the timeout => TimedOut;
// anything else => Failed.
func Probe(ctx context.Context, ns netnsutil.NS, spec ProbeSpec) ProbeResult {
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = defaultProbeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !spec.Dst.IsValid() {
		return ProbeResult{Outcome: Failed, Err: "probe has no destination"}
	}
	if spec.Src.Addr().IsValid() && spec.Src.Addr().Is4() != spec.Dst.Addr().Is4() {
		return ProbeResult{Outcome: Failed, Err: fmt.Sprintf("source %s and destination %s differ in family", spec.Src, spec.Dst)}
	}
	switch strings.ToUpper(spec.Proto) {
	case "", "TCP":
		return probeTCP(ctx, ns, spec)
	case "UDP":
		return probeUDP(ctx, ns, spec)
	case "SCTP":
		return probeSCTP(ctx, ns, spec)
	default:
		return ProbeResult{Outcome: Failed, Err: fmt.Sprintf("unknown protocol %q", spec.Proto)}
	}
}

func hasSource(src netip.AddrPort) bool { return src.Addr().IsValid() || src.Port() != 0 }

func srcIP(src netip.AddrPort) net.IP {
	if src.Addr().IsValid() {
		return src.Addr().AsSlice()
	}
	return nil
}

// probeControl sets SO_REUSEADDR when the probe pins its source port, so a
// fixed 5-tuple (as conntrack tests need) can be used probe after probe.
func probeControl(src netip.AddrPort) func(_, _ string, c syscall.RawConn) error {
	if src.Port() == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		})
		return errors.Join(err, serr)
	}
}

// classify maps a socket error onto an outcome.
func classify(ctx context.Context, err error) Outcome {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Refused
	case errors.Is(ctx.Err(), context.Canceled):
		return Failed
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return TimedOut
	}
	return Failed
}

func failed(ctx context.Context, res ProbeResult, err error) ProbeResult {
	res.Outcome = classify(ctx, err)
	res.Err = err.Error()
	return res
}

// answered parses the reply into res.
func answered(res ProbeResult, reply string) ProbeResult {
	name, seen, err := ParseEchoLine(reply)
	if err != nil {
		res.Outcome = Failed
		res.Err = err.Error()
		return res
	}
	res.Outcome, res.Endpoint, res.SeenSource = Answered, name, seen
	return res
}

func probeTCP(ctx context.Context, ns netnsutil.NS, spec ProbeSpec) ProbeResult {
	var res ProbeResult
	var conn net.Conn
	var dialErr error
	start := time.Now()
	err := ns.Do(func() error {
		d := net.Dialer{Control: probeControl(spec.Src)}
		if hasSource(spec.Src) {
			d.LocalAddr = &net.TCPAddr{IP: srcIP(spec.Src), Port: int(spec.Src.Port())}
		}
		conn, dialErr = d.DialContext(ctx, netFor("tcp", spec.Dst.Addr()), spec.Dst.String())
		return nil
	})
	if err != nil {
		return ProbeResult{Outcome: Failed, Err: err.Error()}
	}
	if dialErr != nil {
		res.RTT = time.Since(start)
		return failed(ctx, res, dialErr)
	}
	defer conn.Close()
	if ta, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		res.Local = ta.AddrPort()
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	line, err := bufio.NewReader(conn).ReadString('\n')
	res.RTT = time.Since(start)
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			res.Outcome, res.Err = Failed, "connection closed without a reply"
			return res
		}
		return failed(ctx, res, err)
	}
	return answered(res, line)
}

func probeUDP(ctx context.Context, ns netnsutil.NS, spec ProbeSpec) ProbeResult {
	var res ProbeResult
	var conn net.Conn
	var dialErr error
	err := ns.Do(func() error {
		d := net.Dialer{Control: probeControl(spec.Src)}
		if hasSource(spec.Src) {
			d.LocalAddr = &net.UDPAddr{IP: srcIP(spec.Src), Port: int(spec.Src.Port())}
		}
		// A connected UDP socket, so ICMP port unreachable comes back as
		// ECONNREFUSED on the next read.
		conn, dialErr = d.DialContext(ctx, netFor("udp", spec.Dst.Addr()), spec.Dst.String())
		return nil
	})
	if err != nil {
		return ProbeResult{Outcome: Failed, Err: err.Error()}
	}
	if dialErr != nil {
		return failed(ctx, res, dialErr)
	}
	defer conn.Close()
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		res.Local = ua.AddrPort()
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	payload := spec.Payload
	if len(payload) == 0 {
		payload = defaultUDPPayload
	}
	start := time.Now()
	if _, err := conn.Write(payload); err != nil {
		res.RTT = time.Since(start)
		return failed(ctx, res, err)
	}
	buf := make([]byte, 65536)
	n, err := conn.Read(buf)
	res.RTT = time.Since(start)
	if err != nil {
		return failed(ctx, res, err)
	}
	return answered(res, string(buf[:n]))
}

// probeSCTP uses raw syscalls (the standard library has no SCTP) on a
// non-blocking socket, waiting with poll so signals cannot cut a wait short.
func probeSCTP(ctx context.Context, ns netnsutil.NS, spec ProbeSpec) ProbeResult {
	var res ProbeResult
	deadline, _ := ctx.Deadline()
	start := time.Now()
	var perr error
	err := ns.Do(func() error {
		af := unix.AF_INET
		if spec.Dst.Addr().Is6() {
			af = unix.AF_INET6
		}
		fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			if isNoSCTP(err) {
				perr = errNoSCTP
			} else {
				perr = fmt.Errorf("sctp socket: %w", err)
			}
			return nil
		}
		defer unix.Close(fd)
		if hasSource(spec.Src) {
			if spec.Src.Port() != 0 {
				_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
			a := spec.Src
			if !a.Addr().IsValid() {
				a = netip.AddrPortFrom(netip.IPv4Unspecified(), a.Port())
				if af == unix.AF_INET6 {
					a = netip.AddrPortFrom(netip.IPv6Unspecified(), a.Port())
				}
			}
			if err := unix.Bind(fd, sockaddr(a)); err != nil {
				perr = fmt.Errorf("bind %s: %w", a, err)
				return nil
			}
		}
		err = unix.Connect(fd, sockaddr(spec.Dst))
		if errors.Is(err, unix.EINPROGRESS) {
			if err = pollFD(ctx, fd, unix.POLLOUT, deadline); err == nil {
				var soerr int
				soerr, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
				if err == nil && soerr != 0 {
					err = syscall.Errno(soerr)
				}
			}
		}
		if err != nil {
			perr = fmt.Errorf("sctp connect %s: %w", spec.Dst, err)
			return nil
		}
		if sa, err := unix.Getsockname(fd); err == nil {
			res.Local = fromSockaddr(sa)
		}
		var got []byte
		buf := make([]byte, 512)
		for {
			if err := pollFD(ctx, fd, unix.POLLIN, deadline); err != nil {
				perr = err
				return nil
			}
			n, err := unix.Read(fd, buf)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				perr = fmt.Errorf("sctp read: %w", err)
				return nil
			}
			got = append(got, buf[:n]...)
			if n == 0 || strings.Contains(string(got), "\n") {
				break
			}
		}
		res.RTT = time.Since(start)
		if len(got) == 0 {
			perr = errors.New("association closed without a reply")
			return nil
		}
		res = answered(res, string(got))
		return nil
	})
	if err != nil {
		return ProbeResult{Outcome: Failed, Err: err.Error()}
	}
	if perr != nil {
		res.RTT = time.Since(start)
		if errors.Is(perr, errNoSCTP) {
			return ProbeResult{Outcome: Failed, Err: perr.Error()}
		}
		return failed(ctx, res, perr)
	}
	return res
}

// pollFD waits for events on fd until the deadline, retrying on EINTR.
func pollFD(ctx context.Context, fd int, events int16, deadline time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ms := time.Until(deadline).Milliseconds()
		if ms <= 0 {
			return os.ErrDeadlineExceeded
		}
		// Wake up at least every 100 ms to notice a cancelled context.
		ms = min(ms, 100)
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(fds, int(ms))
		if errors.Is(err, unix.EINTR) || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return err
		}
		return nil
	}
}

func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// HTTPGet performs one GET from inside ns, with no proxy and no keep-alive,
// and returns the status, headers and up to 1 MiB of body.
func HTTPGet(ctx context.Context, ns netnsutil.NS, url string, timeout time.Duration) (status int, header http.Header, body []byte, err error) {
	if timeout <= 0 {
		timeout = defaultProbeTimeout
	}
	tr := &http.Transport{
		// Proxy stays nil: HTTP_PROXY from the environment must never send
		// lab traffic out of the lab.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			var derr error
			if err := ns.Do(func() error {
				var d net.Dialer
				c, derr = d.DialContext(ctx, network, addr)
				return nil
			}); err != nil {
				return nil, err
			}
			return c, derr
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("GET %s in %s: %w", url, ns.Name, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, resp.Header, body, fmt.Errorf("read body of %s in %s: %w", url, ns.Name, err)
	}
	return resp.StatusCode, resp.Header, body, nil
}
