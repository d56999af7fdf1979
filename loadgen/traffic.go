package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"proxyrig/internal/netnsutil"
	"proxyrig/topologies"
)

// Traffic primitives. Each batch runs on one OS thread that has entered
// the client's namespace once (netnsutil.NS.Do), so a sample costs the
// socket calls and nothing else: no goroutine hand-off, no setns per
// probe, no runtime poller. Sockets are non-blocking and waited on with
// ppoll, whose nanosecond timeout keeps the tight loops tight and which a
// signal can interrupt without losing a connection in progress.

// outcome of one exchange.
type outcome uint8

const (
	okAnswered outcome = iota
	okRefused
	okTimedOut
	okFailed
)

func (o outcome) String() string {
	switch o {
	case okAnswered:
		return string(topologies.Answered)
	case okRefused:
		return string(topologies.Refused)
	case okTimedOut:
		return string(topologies.TimedOut)
	}
	return string(topologies.Failed)
}

func classifyErrno(err error) outcome {
	switch {
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ECONNRESET),
		errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.ENETUNREACH):
		return okRefused
	case errors.Is(err, unix.ETIMEDOUT), errors.Is(err, errPollTimeout):
		return okTimedOut
	}
	return okFailed
}

var errPollTimeout = errors.New("timed out")

// waitFD waits for events on fd until deadline; EINTR just waits again.
func waitFD(fd int, events int16, deadline time.Time) (int16, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return 0, errPollTimeout
		}
		ts := unix.NsecToTimespec(left.Nanoseconds())
		n, err := unix.Ppoll(fds, &ts, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n > 0 {
			return fds[0].Revents, nil
		}
	}
}

func sockaddr4(ap netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

// exchange is what one TCP connection or UDP exchange observed.
type exchange struct {
	outcome outcome
	// rtt is the TCP handshake (connect until writable) or the UDP
	// request/response time.
	rtt time.Duration
	// name is the endpoint that answered, from its echo line.
	name string
	err  error
}

// tcpConnect opens one TCP connection to dst, measures the handshake, reads
// the echo line and closes. buf is scratch space for the reply.
func tcpConnect(dst netip.AddrPort, timeout time.Duration, buf []byte) exchange {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return exchange{outcome: okFailed, err: fmt.Errorf("socket: %w", err)}
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	start := time.Now()
	err = unix.Connect(fd, sockaddr4(dst))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return exchange{outcome: classifyErrno(err), rtt: time.Since(start), err: err}
	}
	if err != nil {
		if _, err := waitFD(fd, unix.POLLOUT, deadline); err != nil {
			return exchange{outcome: classifyErrno(err), rtt: time.Since(start), err: err}
		}
	}
	rtt := time.Since(start)
	if soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
		if err == nil {
			err = syscall.Errno(soerr)
		}
		return exchange{outcome: classifyErrno(err), rtt: rtt, err: err}
	}
	name, err := readLine(fd, buf, deadline)
	if err != nil {
		return exchange{outcome: classifyErrno(err), rtt: rtt, err: err}
	}
	return exchange{outcome: okAnswered, rtt: rtt, name: name}
}

// readLine reads until a newline or EOF and returns the echo line's
// endpoint name.
func readLine(fd int, buf []byte, deadline time.Time) (string, error) {
	got := 0
	for {
		n, err := unix.Read(fd, buf[got:])
		if errors.Is(err, unix.EAGAIN) {
			if _, err := waitFD(fd, unix.POLLIN, deadline); err != nil {
				return "", err
			}
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", err
		}
		got += n
		if i := bytes.IndexByte(buf[:got], '\n'); i >= 0 || n == 0 || got == len(buf) {
			if got == 0 {
				return "", errors.New("connection closed without a reply")
			}
			return echoName(buf[:got]), nil
		}
	}
}

// echoName is the endpoint name of an echo line "<name> <ip>:<port>\n".
func echoName(line []byte) string {
	if i := bytes.IndexByte(line, ' '); i > 0 {
		return string(line[:i])
	}
	return string(bytes.TrimRight(line, "\r\n"))
}

// udpConn is a connected, non-blocking UDP socket.
type udpConn struct{ fd int }

func dialUDP(dst netip.AddrPort) (udpConn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return udpConn{}, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, sockaddr4(dst)); err != nil {
		unix.Close(fd)
		return udpConn{}, fmt.Errorf("connect %s: %w", dst, err)
	}
	return udpConn{fd: fd}, nil
}

func (u udpConn) close() { unix.Close(u.fd) }

// exchange sends one datagram and waits for the reply.
func (u udpConn) exchange(payload, buf []byte, timeout time.Duration) exchange {
	// Drop anything stale (a late reply to an earlier timed-out request).
	for {
		if _, err := unix.Read(u.fd, buf); err != nil {
			break
		}
	}
	deadline := time.Now().Add(timeout)
	start := time.Now()
	if _, err := unix.Write(u.fd, payload); err != nil {
		return exchange{outcome: classifyErrno(err), err: err}
	}
	for {
		n, err := unix.Read(u.fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			if _, err := waitFD(u.fd, unix.POLLIN, deadline); err != nil {
				return exchange{outcome: classifyErrno(err), rtt: time.Since(start), err: err}
			}
			continue
		}
		rtt := time.Since(start)
		if err != nil {
			return exchange{outcome: classifyErrno(err), rtt: rtt, err: err}
		}
		return exchange{outcome: okAnswered, rtt: rtt, name: echoName(buf[:n])}
	}
}

// tcpRR is an established connection to an rr server.
type tcpRR struct{ fd int }

func dialRR(dst netip.AddrPort, timeout time.Duration, buf []byte) (tcpRR, string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return tcpRR{}, "", fmt.Errorf("socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	deadline := time.Now().Add(timeout)
	err = unix.Connect(fd, sockaddr4(dst))
	if errors.Is(err, unix.EINPROGRESS) {
		_, err = waitFD(fd, unix.POLLOUT, deadline)
		if err == nil {
			var soerr int
			soerr, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err == nil && soerr != 0 {
				err = syscall.Errno(soerr)
			}
		}
	}
	if err != nil {
		unix.Close(fd)
		return tcpRR{}, "", fmt.Errorf("connect %s: %w", dst, err)
	}
	name, err := readLine(fd, buf, deadline)
	if err != nil {
		unix.Close(fd)
		return tcpRR{}, "", fmt.Errorf("read greeting from %s: %w", dst, err)
	}
	return tcpRR{fd: fd}, name, nil
}

func (t tcpRR) close() { unix.Close(t.fd) }

// exchange writes one byte and waits for it to come back.
func (t tcpRR) exchange(buf []byte, timeout time.Duration) exchange {
	deadline := time.Now().Add(timeout)
	start := time.Now()
	if _, err := unix.Write(t.fd, []byte{'x'}); err != nil {
		return exchange{outcome: classifyErrno(err), err: err}
	}
	for {
		n, err := unix.Read(t.fd, buf[:1])
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			if _, err := waitFD(t.fd, unix.POLLIN, deadline); err != nil {
				return exchange{outcome: classifyErrno(err), rtt: time.Since(start), err: err}
			}
			continue
		}
		rtt := time.Since(start)
		if err != nil {
			return exchange{outcome: classifyErrno(err), rtt: rtt, err: err}
		}
		if n == 0 {
			return exchange{outcome: okFailed, rtt: rtt, err: errors.New("connection closed")}
		}
		return exchange{outcome: okAnswered, rtt: rtt}
	}
}

// target is a place to send a sample: a VIP, or an endpoint directly.
type target struct {
	dst netip.AddrPort
	// service, for messages.
	service string
}

// connectSamples makes n TCP connections, alternating over the target
// lists (one sample of each list per round, so drift in the machine's state
// hits every list alike) and choosing a random target of each list per
// sample. It returns one slice of handshake times per list, and the
// failures per list.
func connectSamples(ctx context.Context, ns netnsutil.NS, lists [][]target, n int, timeout time.Duration, rng *rand.Rand) ([][]time.Duration, []int, error) {
	rtts := make([][]time.Duration, len(lists))
	fails := make([]int, len(lists))
	for i := range rtts {
		rtts[i] = make([]time.Duration, 0, n)
	}
	picks := make([][]netip.AddrPort, len(lists))
	for i, l := range lists {
		if len(l) == 0 {
			return nil, nil, fmt.Errorf("target list %d is empty", i)
		}
		picks[i] = make([]netip.AddrPort, n)
		for j := range n {
			picks[i][j] = l[rng.IntN(len(l))].dst
		}
	}
	err := ns.Do(func() error {
		buf := make([]byte, 512)
		for j := range n {
			if j%64 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			for i := range lists {
				x := tcpConnect(picks[i][j], timeout, buf)
				if x.outcome != okAnswered {
					fails[i]++
					continue
				}
				rtts[i] = append(rtts[i], x.rtt)
			}
		}
		return nil
	})
	return rtts, fails, err
}

// connectRate makes back-to-back connections to random targets for d and
// returns how many completed with an answer, how many failed and the
// elapsed time: new connections per second from one client core.
func connectRate(ctx context.Context, ns netnsutil.NS, targets []target, d, timeout time.Duration, rng *rand.Rand) (ok, failed int, elapsed time.Duration, err error) {
	if len(targets) == 0 {
		return 0, 0, 0, errors.New("no targets")
	}
	picks := make([]netip.AddrPort, 4096)
	for i := range picks {
		picks[i] = targets[rng.IntN(len(targets))].dst
	}
	err = ns.Do(func() error {
		buf := make([]byte, 512)
		start := time.Now()
		end := start.Add(d)
		for i := 0; ; i++ {
			if i%64 == 0 {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if time.Now().After(end) {
					break
				}
			}
			x := tcpConnect(picks[i%len(picks)], timeout, buf)
			if x.outcome == okAnswered {
				ok++
			} else {
				failed++
			}
		}
		elapsed = time.Since(start)
		return nil
	})
	return ok, failed, elapsed, err
}

// blastPayload marks datagrams the scale backends count but do not answer.
var blastPayload = []byte("blast proxyrig\n")

// udpBlast sends datagrams round-robin over one connected socket per
// flow, as fast as one thread can, for d. Sends that find the socket
// buffer full are counted as dropped at the sender.
func udpBlast(ctx context.Context, ns netnsutil.NS, flows []netip.AddrPort, d time.Duration) (sent, dropped int, elapsed time.Duration, err error) {
	err = ns.Do(func() error {
		conns := make([]udpConn, 0, len(flows))
		defer func() {
			for _, c := range conns {
				c.close()
			}
		}()
		for _, f := range flows {
			c, err := dialUDP(f)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		start := time.Now()
		end := start.Add(d)
		for i := 0; ; i++ {
			if i%256 == 0 {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if time.Now().After(end) {
					break
				}
			}
			c := conns[i%len(conns)]
			if _, err := unix.Write(c.fd, blastPayload); err != nil {
				dropped++
				continue
			}
			sent++
		}
		elapsed = time.Since(start)
		return nil
	})
	return sent, dropped, elapsed, err
}

// udpRRSamples opens one connected UDP socket to dst (a flow that stays
// established in conntrack after the first exchange), warms it up, then
// times n request/response exchanges.
func udpRRSamples(ctx context.Context, ns netnsutil.NS, dst netip.AddrPort, n int, timeout time.Duration) ([]time.Duration, int, error) {
	var rtts []time.Duration
	fails := 0
	err := ns.Do(func() error {
		c, err := dialUDP(dst)
		if err != nil {
			return err
		}
		defer c.close()
		buf := make([]byte, 512)
		payload := []byte("rr\n")
		for range 10 {
			c.exchange(payload, buf, timeout)
		}
		rtts = make([]time.Duration, 0, n)
		for j := range n {
			if j%64 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			x := c.exchange(payload, buf, timeout)
			if x.outcome != okAnswered {
				fails++
				continue
			}
			rtts = append(rtts, x.rtt)
		}
		return nil
	})
	return rtts, fails, err
}

// tcpRRSamples opens one TCP connection to an rr server at dst and times n
// one-byte request/response exchanges on it.
func tcpRRSamples(ctx context.Context, ns netnsutil.NS, dst netip.AddrPort, n int, timeout time.Duration) ([]time.Duration, int, error) {
	var rtts []time.Duration
	fails := 0
	err := ns.Do(func() error {
		buf := make([]byte, 512)
		c, _, err := dialRR(dst, timeout, buf)
		if err != nil {
			return err
		}
		defer c.close()
		for range 10 {
			c.exchange(buf, timeout)
		}
		rtts = make([]time.Duration, 0, n)
		for j := range n {
			if j%64 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			x := c.exchange(buf, timeout)
			if x.outcome != okAnswered {
				fails++
				if x.outcome != okTimedOut {
					return fmt.Errorf("rr exchange with %s: %v", dst, x.err)
				}
				continue
			}
			rtts = append(rtts, x.rtt)
		}
		return nil
	})
	return rtts, fails, err
}
