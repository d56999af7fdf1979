package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"proxyrig/model"
	"proxyrig/topologies"
)

// Health-check node ports (CONFORMANCE.md §G ETP-04, ETP-05 and §C
// EPC-06's health-check part). kube-proxy serves them next to the
// datapath; in the lab the harness's health-check servers play that part
// on every datapath node, so what these specs hold a datapath to is the
// whole picture a load balancer sees from outside: the health-check port
// answering with kube-proxy's contract on exactly the nodes that should
// receive traffic, its being released when the Service no longer asks for
// it, and the node ports forwarding (or not) to match.

// hcReply is one health-check answer as an external load balancer gets it.
type hcReply struct {
	status      int
	contentType string
	weight      string // X-Load-Balancing-Endpoint-Weight
	body        hcJSON
	raw         string
	err         error
}

// hcJSON is kube-proxy's health-check body (pkg/proxy/healthcheck
// service_health.go hcPayload).
type hcJSON struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// healthCheck GETs http://<node>:<port>/healthz from external client 0.
func (h *harness) healthCheck(ctx context.Context, node netip.Addr, port int32) hcReply {
	url := fmt.Sprintf("http://%s/healthz", netip.AddrPortFrom(node, uint16(port)))
	status, hdr, body, err := topologies.HTTPGet(ctx, h.fromExternal(), url, fwdTimeout)
	r := hcReply{status: status, raw: string(body), err: err}
	if err != nil {
		return r
	}
	r.contentType = hdr.Get("Content-Type")
	r.weight = hdr.Get("X-Load-Balancing-Endpoint-Weight")
	if jerr := json.Unmarshal(body, &r.body); jerr != nil {
		r.err = fmt.Errorf("body %q is not the health-check JSON: %w", body, jerr)
	}
	return r
}

// expectHealthCheck requires two consecutive answers (a load balancer's
// usual threshold) from node's health-check port: 200 with localEndpoints
// = weight = n when n > 0, 503 with 0 otherwise, and the JSON naming the
// Service with a healthy proxy.
func (h *harness) expectHealthCheck(ctx context.Context, node string, port int32, svc string, n int) {
	ip := h.lab.NodeIP(node, false)
	wantStatus := 200
	if n == 0 {
		wantStatus = 503
	}
	By(fmt.Sprintf("GET http://%s:%d/healthz from outside, twice: want %d with %d local endpoints", ip, port, wantStatus, n))
	for range 2 {
		r := h.healthCheck(ctx, ip, port)
		Expect(r.err).NotTo(HaveOccurred(), "health check of %s on %s", svc, node)
		Expect(r.status).To(Equal(wantStatus), "health check of %s on %s (body %s)", svc, node, r.raw)
		Expect(r.contentType).To(Equal("application/json"), "Content-Type of the health check on %s", node)
		Expect(r.weight).To(Equal(strconv.Itoa(n)), "X-Load-Balancing-Endpoint-Weight of the health check on %s", node)
		Expect(r.body.Service.Namespace).To(Equal("default"), "health check on %s: %s", node, r.raw)
		Expect(r.body.Service.Name).To(Equal(svc), "health check on %s: %s", node, r.raw)
		Expect(r.body.LocalEndpoints).To(Equal(n), "health check on %s: %s", node, r.raw)
		Expect(r.body.ServiceProxyHealthy).To(BeTrue(), "health check on %s: %s", node, r.raw)
	}
}

// expectHealthCheckClosed requires the port to refuse connections: the
// health-check server is gone and nothing else took the port.
func (h *harness) expectHealthCheckClosed(ctx context.Context, node string, port int32) {
	ip := h.lab.NodeIP(node, false)
	By(fmt.Sprintf("GET http://%s:%d/healthz from outside: want the connection refused", ip, port))
	r := h.healthCheck(ctx, ip, port)
	Expect(errors.Is(r.err, syscall.ECONNREFUSED)).To(BeTrue(),
		"health-check port %d on %s should be closed; got status %d, error %v", port, node, r.status, r.err)
}

func healthCheckSpecs(dp string) {
	describeHealthCheckContract(dp)
	describeETPSwitch(dp)
}

// ETP-04: the health-check node port's HTTP contract, seen from outside.
func describeHealthCheckContract(dp string) {
	lb := bService{
		Name: "hc", Type: model.LoadBalancer, ClusterIP: "198.19.0.81", LBIP: "198.19.2.81",
		ETP: model.PolicyLocal, HCNP: 30810, Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30811}},
	}
	podA1 := bEndpoint{Name: "pod-a1", IP: "198.18.64.81", Node: "node-a"}
	podA2 := bEndpoint{Name: "pod-a2", IP: "198.18.64.82", Node: "node-a"}
	podA3NotReady := bEndpoint{Name: "pod-a3", IP: "198.18.64.83", Node: "node-a", Cond: "{ready: false}"}
	podB1 := bEndpoint{Name: "pod-b1", IP: "198.18.65.81", Node: "node-b"}
	fixture := func(s bService, eps ...bEndpoint) string { return fixtureOf(bNodeA, bNodeB, s.yaml(eps)) }
	nodePort := func(h *harness, node string) probeTarget {
		return probeTarget{what: "external to " + node + " NodePort", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(h.lab.NodeIP(node, false), 30811)}
	}

	Describe("ETP-04 healthCheckNodePort contract", Ordered, Label("ETP-04"), func() {
		var h *harness
		BeforeAll(func(ctx SpecContext) {
			h = newBehaviourLab(ctx, dp, "ETP-04", "healthCheckNodePort contract", fixture(lb, podA1))
		}, NodeTimeout(buildTimeout))

		It("only the node with a ready endpoint answers 200, with the JSON and weight; the other 503", func(ctx SpecContext) {
			h.applyFixture(ctx, "one endpoint on node-a", fixture(lb, podA1))
			h.expectHealthCheck(ctx, "node-a", lb.HCNP, lb.Name, 1)
			h.expectHealthCheck(ctx, "node-b", lb.HCNP, lb.Name, 0)
			// What the load balancer's choice means for traffic: the
			// healthy node serves locally with the client's address, the
			// unhealthy one drops.
			h.forward(ctx, nodePort(h, "node-a"), 5, fwdCheck{endpoints: []string{podA1.Name}, source: clientSource})
			h.dropped(ctx, nodePort(h, "node-b"))
		}, SpecTimeout(specTimeout))

		It("the weight counts ready local endpoints only", func(ctx SpecContext) {
			h.applyFixture(ctx, "two ready and one unready endpoint on node-a", fixture(lb, podA1, podA2, podA3NotReady))
			h.expectHealthCheck(ctx, "node-a", lb.HCNP, lb.Name, 2)
			h.expectHealthCheck(ctx, "node-b", lb.HCNP, lb.Name, 0)
			h.forward(ctx, nodePort(h, "node-a"), 2*connsPerEndpoint, fwdCheck{endpoints: []string{podA1.Name, podA2.Name}, all: true, source: clientSource})
		}, SpecTimeout(specTimeout))

		It("moving the endpoint to node-b moves the 200", func(ctx SpecContext) {
			h.applyFixture(ctx, "the endpoint moved to node-b", fixture(lb, podB1))
			h.expectHealthCheck(ctx, "node-a", lb.HCNP, lb.Name, 0)
			h.expectHealthCheck(ctx, "node-b", lb.HCNP, lb.Name, 1)
			h.forward(ctx, nodePort(h, "node-b"), 5, fwdCheck{endpoints: []string{podB1.Name}, source: clientSource})
			h.dropped(ctx, nodePort(h, "node-a"))
		}, SpecTimeout(specTimeout))

		It("changing the Service to ClusterIP closes the port on every node", func(ctx SpecContext) {
			cip := bService{Name: lb.Name, ClusterIP: lb.ClusterIP, Ports: []bPort{{Name: "tcp", Port: 80}}}
			h.applyFixture(ctx, "the Service changed to type ClusterIP", fixture(cip, podA1))
			h.expectHealthCheckClosed(ctx, "node-a", lb.HCNP)
			h.expectHealthCheckClosed(ctx, "node-b", lb.HCNP)
			h.notServed(ctx, nodePort(h, "node-a"))
			// The Service itself still works inside the cluster.
			h.forward(ctx, probeTarget{what: "pod on node-b to ClusterIP", ns: h.fromPod("node-b"), proto: model.TCP, dst: addrPortOf(lb.ClusterIP, 80)},
				3, fwdCheck{endpoints: []string{podA1.Name}})
		}, SpecTimeout(specTimeout))

		It("deleting the Service closes the port on every node", func(ctx SpecContext) {
			h.applyFixture(ctx, "the Service restored", fixture(lb, podA1))
			h.expectHealthCheck(ctx, "node-a", lb.HCNP, lb.Name, 1)
			h.applyFixture(ctx, "the Service deleted", fixtureOf(bNodeA, bNodeB))
			h.expectHealthCheckClosed(ctx, "node-a", lb.HCNP)
			h.expectHealthCheckClosed(ctx, "node-b", lb.HCNP)
			h.notServed(ctx, nodePort(h, "node-a"))
		}, SpecTimeout(specTimeout))
	})
}

// ETP-05: switching externalTrafficPolicy Local -> Cluster -> Local at
// runtime. Cluster releases the health-check port, lets every node forward
// and SNATs (the client's address is lost); Local again brings back the
// same health-check port and the client's address.
func describeETPSwitch(dp string) {
	local := bService{
		Name: "etp", Type: model.LoadBalancer, ClusterIP: "198.19.0.82", LBIP: "198.19.2.82",
		ETP: model.PolicyLocal, HCNP: 30820, Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30821}},
	}
	cluster := local
	cluster.ETP, cluster.HCNP = model.PolicyCluster, 0
	podA1 := bEndpoint{Name: "pod-a1", IP: "198.18.64.84", Node: "node-a"}
	fixture := func(s bService) string { return fixtureOf(bNodeA, bNodeB, s.yaml([]bEndpoint{podA1})) }

	It("ETP-05 switching eTP Local -> Cluster -> Local releases and restores the health check and the client address", Label("ETP-05"), func(ctx SpecContext) {
		h := newBehaviourLab(ctx, dp, "ETP-05", "switching eTP at runtime", fixture(local))
		lbIP := probeTarget{what: "external to LB IP", ns: h.fromExternal(), proto: model.TCP, dst: addrPortOf(local.LBIP, 80)}
		npB := probeTarget{what: "external to node-b NodePort", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(nodeBIP, 30821)}
		eps := []string{podA1.Name}
		checkLocal := func() {
			h.expectHealthCheck(ctx, "node-a", local.HCNP, local.Name, 1)
			h.expectHealthCheck(ctx, "node-b", local.HCNP, local.Name, 0)
			h.forward(ctx, lbIP, 5, fwdCheck{endpoints: eps, source: clientSource})
			h.dropped(ctx, npB)
		}

		By("eTP=Local")
		checkLocal()

		h.applyFixture(ctx, "eTP=Cluster", fixture(cluster))
		h.expectHealthCheckClosed(ctx, "node-a", local.HCNP)
		h.expectHealthCheckClosed(ctx, "node-b", local.HCNP)
		h.forward(ctx, lbIP, 5, fwdCheck{endpoints: eps, source: nodeSource, node: "node-a"})
		h.forward(ctx, npB, 5, fwdCheck{endpoints: eps, source: nodeSource, node: "node-b"})

		h.applyFixture(ctx, "eTP=Local again, same healthCheckNodePort", fixture(local))
		checkLocal()
	}, SpecTimeout(specTimeout))
}

// EPC-06 (health-check part): the health check counts ready endpoints
// only, so a node whose only local endpoint is terminating reports 503,
// while its NodePort still reaches that still-serving pod (local fallback
// to serving-terminating endpoints).
func terminatingHealthCheckSpecs(dp string) {
	lb := bService{
		Name: "term", Type: model.LoadBalancer, ClusterIP: "198.19.0.83", LBIP: "198.19.2.83",
		ETP: model.PolicyLocal, HCNP: 30830, Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30831}},
	}
	ready := bEndpoint{Name: "pod-a1", IP: "198.18.64.85", Node: "node-a"}
	terminating := ready
	terminating.Cond = terminatingServing
	fixture := func(ep bEndpoint) string { return fixtureOf(bNodeA, lb.yaml([]bEndpoint{ep})) }

	It("EPC-06 the health check fails once the only local endpoint is terminating, yet the NodePort still reaches it", Label("EPC-06"), func(ctx SpecContext) {
		h := newBehaviourLab(ctx, dp, "EPC-06", "health check of a terminating endpoint", fixture(ready))
		np := probeTarget{what: "external to node-a NodePort", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(nodeAIP, 30831)}
		lbIP := probeTarget{what: "external to LB IP", ns: h.fromExternal(), proto: model.TCP, dst: addrPortOf(lb.LBIP, 80)}
		eps := []string{ready.Name}

		h.expectHealthCheck(ctx, "node-a", lb.HCNP, lb.Name, 1)
		h.forward(ctx, np, 5, fwdCheck{endpoints: eps, source: clientSource})

		h.applyFixture(ctx, "the pod terminating (serving, not ready)", fixture(terminating))
		h.expectHealthCheck(ctx, "node-a", lb.HCNP, lb.Name, 0)
		h.forward(ctx, np, 5, fwdCheck{endpoints: eps, source: clientSource})
		h.forward(ctx, lbIP, 5, fwdCheck{endpoints: eps, source: clientSource})
	}, SpecTimeout(specTimeout))
}
