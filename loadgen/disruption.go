package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"proxyrig/model"
)

// The disruption score: what a rolling update costs the clients of a
// Service. One TCP Service and one UDP Service have their endpoints
// replaced one by one, as a Deployment's rolling update does it (the new
// pod becomes ready, the old one turns terminating, then goes away), at
// Samples.ChurnRate changes per second, while the client keeps opening TCP
// connections to the one and exchanging datagrams on long-lived flows with
// the other.
//
// Scale-mode backends answer on every address, removed or not, so a
// connection the datapath still sends to a removed endpoint is answered,
// and its echo line names the dead endpoint: that is how "delivered to an
// endpoint already removed" is counted. A UDP flow whose conntrack entry
// still points at a removed endpoint after the update ends is "stuck" (the
// datapath did not flush stale conntrack, kubernetes#59368).

type disruptionEvent struct {
	name string
	at   time.Time // when the Sync that removed it returned
}

// disruption runs one rolling update per repetition.
func (r *runner) disruption(ctx context.Context, cs *cellState, churn *Churn) error {
	cfg := r.cfg
	if len(cs.tg.udpVIP) == 0 {
		cs.note("disruption: no UDP Service reachable from the client: UDP flows not measured")
	}
	for range cfg.Reps {
		if err := r.disruptionOnce(ctx, cs, churn); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) disruptionOnce(ctx context.Context, cs *cellState, churn *Churn) error {
	cfg := r.cfg
	// Fresh Services, so the update starts from a known, fully ready set.
	nodes := len(cs.lab.Nodes())
	all := make([]int, nodes)
	for i := range all {
		all[i] = i
	}
	tcpAdd, err := churn.AddServiceWith(ServiceOptions{Endpoints: cfg.Endpoints, Nodes: all})
	if err != nil {
		return err
	}
	udpAdd, err := churn.AddServiceWith(ServiceOptions{Endpoints: cfg.Endpoints, Nodes: all, UDP: true})
	if err != nil {
		return err
	}
	if err := r.apply(ctx, cs, udpAdd); err != nil {
		return err
	}
	defer func() {
		for _, name := range []model.ServiceName{tcpAdd.Service, udpAdd.Service} {
			if ch, err := churn.RemoveServiceNamed(name); err == nil {
				_ = r.apply(context.WithoutCancel(ctx), cs, ch)
			}
		}
	}()
	// Wait until both VIPs answer before the clock starts.
	if _, err := firstAnswerRetry(ctx, cs, tcpAdd.VIP, "TCP"); err != nil {
		return fmt.Errorf("new Service %s never answered: %w", tcpAdd.Service, err)
	}
	if _, err := firstAnswerRetry(ctx, cs, udpAdd.VIP, "UDP"); err != nil {
		return fmt.Errorf("new Service %s never answered: %w", udpAdd.Service, err)
	}

	var mu sync.Mutex
	var removed []disruptionEvent
	removedAt := func(name string, sent time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range removed {
			if e.name == name && !sent.Before(e.at) {
				return true
			}
		}
		return false
	}
	isRemoved := func(name string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range removed {
			if e.name == name {
				return true
			}
		}
		return false
	}

	// The client: TCP connections back to back, and every few of them one
	// exchange on each UDP flow.
	type tcpSample struct {
		sent time.Time
		out  outcome
		name string
	}
	var samples []tcpSample
	var udpExchanges, udpFailed int
	flows := 8
	pctx, stopProbes := context.WithCancel(ctx)
	probeDone := make(chan error, 1)
	var conns []udpConn
	go func() {
		probeDone <- cs.client.Do(func() error {
			buf := make([]byte, 256)
			for range flows {
				c, err := dialUDP(udpAdd.VIP)
				if err != nil {
					return err
				}
				conns = append(conns, c)
			}
			payload := []byte("rr\n")
			for i := 0; pctx.Err() == nil; i++ {
				sent := time.Now()
				x := tcpConnect(tcpAdd.VIP, probeTimeout, buf)
				samples = append(samples, tcpSample{sent, x.outcome, x.name})
				if i%8 == 0 {
					for _, c := range conns {
						y := c.exchange(payload, buf, 200*time.Millisecond)
						udpExchanges++
						if y.outcome != okAnswered {
							udpFailed++
						}
					}
				}
			}
			return nil
		})
	}()

	// The rolling update: for each old endpoint of each Service, add a new
	// one, make the old one terminating, remove it; one change per tick.
	interval := time.Duration(float64(time.Second) / cfg.Samples.ChurnRate)
	// The whole rolling update runs, at most at the churn rate, unless
	// it would outlast Samples.Disruption: then it stops there and
	// "changes" says how far it got.
	deadline := time.Now().Add(cfg.Samples.Disruption)
	var steps []func() (Change, string, error)
	for _, add := range []Change{tcpAdd, udpAdd} {
		for _, old := range add.Added {
			svc := add.Service
			steps = append(steps,
				func() (Change, string, error) { c, err := churn.AddEndpointTo(svc, -1); return c, "", err },
				func() (Change, string, error) {
					c, err := churn.SetEndpointConditions(svc, old, false, true, true)
					return c, "", err
				},
				func() (Change, string, error) {
					c, err := churn.RemoveEndpointFrom(svc, old)
					return c, EndpointName(old), err
				})
		}
	}
	// Interleave the two Services' updates.
	half := len(steps) / 2
	var order []func() (Change, string, error)
	for i := 0; i < half; i++ {
		order = append(order, steps[i], steps[half+i])
	}
	changes := 0
	var applyErr error
	next := time.Now()
	for _, step := range order {
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		ch, gone, err := step()
		if err != nil {
			applyErr = err
			break
		}
		if err := r.apply(ctx, cs, ch); err != nil {
			applyErr = err
			break
		}
		changes++
		if gone != "" {
			mu.Lock()
			removed = append(removed, disruptionEvent{gone, time.Now()})
			mu.Unlock()
		}
	}
	// Let probes run a little past the last change, then stop them.
	time.Sleep(200 * time.Millisecond)
	stopProbes()
	perr := <-probeDone

	// Stuck flows: a flow whose answer still comes from a removed endpoint
	// after the update ended.
	stuck := 0
	_ = cs.client.Do(func() error {
		buf := make([]byte, 256)
		for _, c := range conns {
			y := c.exchange([]byte("rr\n"), buf, 200*time.Millisecond)
			if y.outcome == okAnswered && isRemoved(y.name) {
				stuck++
			}
			c.close()
		}
		return nil
	})
	if err := errors.Join(applyErr, perr); err != nil {
		return err
	}
	failed, toRemoved := 0, 0
	for _, s := range samples {
		switch {
		case s.out != okAnswered:
			failed++
		case removedAt(s.name, s.sent):
			toRemoved++
		}
	}
	rec := cs.rec
	rec.add(MetricDisruption, "tcp", "failed", "connections", len(samples), float64(failed))
	rec.add(MetricDisruption, "tcp", "to-removed", "connections", len(samples), float64(toRemoved))
	rec.add(MetricDisruption, "tcp", "connections", "connections", len(samples), float64(len(samples)))
	rec.add(MetricDisruption, "udp", "failed", "exchanges", udpExchanges, float64(udpFailed))
	rec.add(MetricDisruption, "udp", "stuck-flows", "flows", flows, float64(stuck))
	rec.add(MetricDisruption, "", "changes", "changes", len(order), float64(changes))
	if changes < len(order) {
		cs.note("disruption: the rolling update made %d of its %d changes within %s", changes, len(order), cfg.Samples.Disruption)
	}
	return nil
}

// apply prepares and syncs one change (timed into the cell's sync time).
func (r *runner) apply(ctx context.Context, cs *cellState, ch Change) error {
	prepared, err := cs.lab.Prepare(ch.Cluster)
	if err != nil {
		return err
	}
	if _, _, _, err := cs.sync(ctx, prepared); err != nil {
		return fmt.Errorf("sync %s: %w", ch, err)
	}
	return nil
}

// firstAnswerRetry waits up to five seconds for dst to answer.
func firstAnswerRetry(ctx context.Context, cs *cellState, dst netip.AddrPort, proto string) (string, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		name, err := firstAnswer(cs.client, dst, proto)
		if err == nil {
			return name, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
