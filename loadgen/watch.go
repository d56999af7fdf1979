package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"proxyrig/internal/netnsutil"
)

// The programming-latency watcher: from a client namespace, start a new
// TCP connection to one address every interval, whatever happened to the
// ones before, and note for each when it was sent and what it saw. A
// probe that is never answered (a VIP the datapath does not know yet: its
// SYN goes nowhere) stays pending until its own timeout, while later probes
// go on, so the moment the datapath starts to behave differently is pinned
// to within one interval, not one timeout. This is the same for every
// datapath: it only looks at what comes back.

// watchSpec configures a watch.
type watchSpec struct {
	dst      netip.AddrPort
	interval time.Duration // between probe starts (default 250 µs)
	timeout  time.Duration // per probe (default 300 ms)
	// want reports whether a probe saw the new state, old whether it
	// definitely saw the old one. A probe that is neither (a timeout on a
	// loaded machine, say) counts toward neither.
	want, old func(x exchange) bool
	// confirm is how many probes to complete after the first that saw the
	// new state, to count flaps (default 20).
	confirm int
}

// watchResult is what a watch saw.
type watchResult struct {
	// first is when the earliest probe that saw the new state was sent.
	first time.Time
	found bool
	// before counts completed probes sent before first; after those sent
	// later, and flaps those of them that saw the old state again.
	before, after, flaps int
	// oldSeen is whether any probe before first saw the old state.
	oldSeen bool
	// firstOutcomes counts outcomes of probes before first, by outcome,
	// for diagnostics ("all timed out" is what an unknown VIP looks like).
	beforeOutcomes map[string]int
}

type pendingProbe struct {
	fd      int
	sent    time.Time
	reading bool
	got     int
	buf     []byte
}

// watch probes until the new state has been seen, every probe sent before
// it has finished, and confirm more have completed; or until ctx is done.
// started is closed once the first probe is on its way.
func watch(ctx context.Context, ns netnsutil.NS, spec watchSpec, started chan<- struct{}) (watchResult, error) {
	if spec.interval <= 0 {
		spec.interval = 250 * time.Microsecond
	}
	if spec.timeout <= 0 {
		spec.timeout = 300 * time.Millisecond
	}
	if spec.confirm <= 0 {
		spec.confirm = 20
	}
	res := watchResult{beforeOutcomes: map[string]int{}}
	type done struct {
		sent    time.Time
		ok, old bool
		out     outcome
	}
	var finished []done
	closedStarted := false
	err := ns.Do(func() error {
		pending := map[int]*pendingProbe{}
		defer func() {
			for fd := range pending {
				unix.Close(fd)
			}
		}()
		complete := func(p *pendingProbe, x exchange) {
			unix.Close(p.fd)
			delete(pending, p.fd)
			ok := spec.want(x)
			finished = append(finished, done{p.sent, ok, spec.old(x), x.outcome})
			if ok && (!res.found || p.sent.Before(res.first)) {
				res.first, res.found = p.sent, true
			}
		}
		next := time.Now()
		var fds []unix.PollFd
		var order []*pendingProbe
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			now := time.Now()
			if res.found {
				earlierPending, later := false, 0
				for _, p := range pending {
					if p.sent.Before(res.first) {
						earlierPending = true
					}
				}
				for _, d := range finished {
					if d.sent.After(res.first) {
						later++
					}
				}
				if !earlierPending && later >= spec.confirm {
					return nil
				}
			}
			if !now.Before(next) {
				p, x, err := startProbe(spec.dst, now)
				switch {
				case err != nil:
					return err
				case p == nil:
					finished = append(finished, done{now, spec.want(x), spec.old(x), x.outcome})
					if spec.want(x) && !res.found {
						res.first, res.found = now, true
					}
				default:
					pending[p.fd] = p
				}
				if !closedStarted {
					close(started)
					closedStarted = true
				}
				next = next.Add(spec.interval)
				if next.Before(now) {
					next = now.Add(spec.interval)
				}
			}
			fds, order = fds[:0], order[:0]
			wait := time.Until(next)
			for _, p := range pending {
				ev := int16(unix.POLLOUT)
				if p.reading {
					ev = unix.POLLIN
				}
				fds = append(fds, unix.PollFd{Fd: int32(p.fd), Events: ev})
				order = append(order, p)
				wait = min(wait, time.Until(p.sent.Add(spec.timeout)))
			}
			if wait > 0 {
				ts := unix.NsecToTimespec(wait.Nanoseconds())
				if _, err := unix.Ppoll(fds, &ts, nil); err != nil && !errors.Is(err, unix.EINTR) {
					return fmt.Errorf("ppoll: %w", err)
				}
			}
			now = time.Now()
			for i, p := range order {
				if fds[i].Revents == 0 {
					if now.Sub(p.sent) >= spec.timeout {
						complete(p, exchange{outcome: okTimedOut})
					}
					continue
				}
				if !p.reading {
					soerr, err := unix.GetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_ERROR)
					if err == nil && soerr != 0 {
						err = syscall.Errno(soerr)
					}
					if err != nil {
						complete(p, exchange{outcome: classifyErrno(err), err: err})
						continue
					}
					p.reading = true
					continue
				}
				n, err := unix.Read(p.fd, p.buf[p.got:])
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil {
					complete(p, exchange{outcome: classifyErrno(err), err: err})
					continue
				}
				p.got += n
				if bytes.IndexByte(p.buf[:p.got], '\n') >= 0 || n == 0 || p.got == len(p.buf) {
					if p.got == 0 {
						complete(p, exchange{outcome: okFailed, err: errors.New("closed without a reply")})
					} else {
						complete(p, exchange{outcome: okAnswered, name: echoName(p.buf[:p.got])})
					}
				}
			}
		}
	})
	if !closedStarted {
		close(started)
	}
	for _, d := range finished {
		switch {
		case res.found && d.sent.After(res.first):
			res.after++
			if d.old {
				res.flaps++
			}
		case !res.found || d.sent.Before(res.first):
			res.before++
			res.beforeOutcomes[d.out.String()]++
			res.oldSeen = res.oldSeen || d.old
		}
	}
	return res, err
}

// startProbe opens a non-blocking TCP connection. A connect that fails at
// once (ECONNREFUSED from a local REJECT, say) returns no pending probe and
// its exchange.
func startProbe(dst netip.AddrPort, now time.Time) (*pendingProbe, exchange, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, exchange{}, fmt.Errorf("socket: %w", err)
	}
	err = unix.Connect(fd, sockaddr4(dst))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, exchange{outcome: classifyErrno(err), err: err}, nil
	}
	return &pendingProbe{fd: fd, sent: now, buf: make([]byte, 128)}, exchange{}, nil
}
