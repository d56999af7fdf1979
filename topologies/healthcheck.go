package topologies

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"proxyrig/internal/netnsutil"
)

// Health-check servers play kube-proxy's part for Services with
// externalTrafficPolicy: Local: on every node that runs the datapath, an
// HTTP server on the Service's healthCheckNodePort tells a load balancer
// whether this node has a ready endpoint of it. The contract follows
// kubernetes pkg/proxy/healthcheck/service_health.go:
//   - any path, any method;
//   - 200 when the node has ≥1 ready local endpoint and the proxy is
//     healthy, else 503;
//   - Content-Type: application/json, X-Content-Type-Options: nosniff,
//     X-Load-Balancing-Endpoint-Weight: <local endpoint count>;
//   - a tab-indented JSON body naming the Service and the count.

type hcServer struct {
	node    string
	port    int32
	state   atomic.Pointer[hcPlan]
	healthy *atomic.Bool
	srv     *http.Server
	done    chan struct{}
}

// hcBody is the response body; field order is the wire order.
type hcBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (s *hcServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	st := s.state.Load()
	healthy := s.healthy == nil || s.healthy.Load()
	var body hcBody
	body.Service.Namespace = st.svc.Namespace
	body.Service.Name = st.svc.Name
	body.LocalEndpoints = st.count
	body.ServiceProxyHealthy = healthy
	b, _ := json.MarshalIndent(body, "", "\t")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(st.count))
	if st.count > 0 && healthy {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(b)
}

// startHC listens on :port in the node's namespace: one dual-stack socket
// takes IPv4 and IPv6 on every address, as kube-proxy's 0.0.0.0 listener
// does when nodePortAddresses is unset.
func startHC(ns netnsutil.NS, node string, port int32, st hcPlan, healthy *atomic.Bool) (*hcServer, error) {
	s := &hcServer{node: node, port: port, healthy: healthy, done: make(chan struct{})}
	s.state.Store(&st)
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", ":"+strconv.Itoa(int(port)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("health check %s on node %s port %d: %w", st.svc, node, port, err)
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *hcServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

// syncHealthChecks opens, updates and closes health-check ports so each
// datapath node serves exactly p.hc[node].
func (l *Lab) syncHealthChecks(p *plan) error {
	var errs []error
	nodes := make([]string, 0, len(p.hc))
	for n := range p.hc {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, node := range nodes {
		want := p.hc[node]
		l.mu.Lock()
		have := l.hc[node]
		if have == nil {
			have = map[int32]*hcServer{}
			l.hc[node] = have
		}
		var stop []*hcServer
		for port, s := range have {
			if _, ok := want[port]; !ok {
				stop = append(stop, s)
				delete(have, port)
			}
		}
		var start []int32
		for port, st := range want {
			if s, ok := have[port]; ok {
				s.state.Store(&st)
			} else {
				start = append(start, port)
			}
		}
		healthy := l.healthy[node]
		l.mu.Unlock()
		for _, s := range stop {
			s.close()
		}
		sort.Slice(start, func(i, j int) bool { return start[i] < start[j] })
		for _, port := range start {
			s, err := startHC(netnsutil.NS{Name: p.node(node).ns}, node, port, want[port], healthy)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			l.mu.Lock()
			l.hc[node][port] = s
			l.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

func (l *Lab) stopHealthChecks() {
	l.mu.Lock()
	var stop []*hcServer
	for _, ports := range l.hc {
		for _, s := range ports {
			stop = append(stop, s)
		}
	}
	l.hc = map[string]map[int32]*hcServer{}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range stop {
		wg.Add(1)
		go func() { defer wg.Done(); s.close() }()
	}
	wg.Wait()
}
