package fake_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"proxyrig/datapaths"
	"proxyrig/datapaths/fake"
	"proxyrig/model"
)

const oneService = `
apiVersion: v1
kind: Node
metadata: {name: node-a}
status:
  addresses: [{type: InternalIP, address: 198.18.0.11}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.10
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, name: web-1}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  clusterIP: 198.19.0.20
  ports: [{name: http, port: 80, protocol: TCP}]
`

func view(t *testing.T) *datapaths.NodeView {
	t.Helper()
	cl, err := model.Parse("one.yaml", []byte(oneService))
	if err != nil {
		t.Fatal(err)
	}
	return &datapaths.NodeView{
		Cluster: cl,
		Node:    cl.Node("node-a"),
		Proxy:   datapaths.ProxyConfig{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.64.0/18")}},
	}
}

func TestFakeRecordsSyncs(t *testing.T) {
	ctx := context.Background()
	f := fake.New(datapaths.Config{Node: "node-a"})
	if f.Current() != nil {
		t.Fatal("a new fake has state in force")
	}
	v := view(t)
	st, err := f.Sync(ctx, v, datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full || st.Objects != 2 {
		t.Errorf("first sync stats = %+v, want full with 2 objects", st)
	}
	st, err = f.Sync(ctx, v, datapaths.SyncOptions{})
	if err != nil || st.Full {
		t.Errorf("second sync = %+v, %v; want partial, no error", st, err)
	}

	boom := errors.New("boom")
	f.FailNextSync(boom)
	v2 := view(t)
	if _, err := f.Sync(ctx, v2, datapaths.SyncOptions{}); !errors.Is(err, boom) {
		t.Errorf("failing sync error = %v, want it to wrap %v", err, boom)
	}
	if f.Current() != v {
		t.Error("a failed sync replaced the view in force")
	}
	if st, err := f.Sync(ctx, v2, datapaths.SyncOptions{}); err != nil || !st.Full {
		t.Errorf("sync after a failure = %+v, %v; want a full sync", st, err)
	}
	if got := f.Syncs(); got != 4 {
		t.Errorf("Syncs() = %d, want 4", got)
	}
	if got := f.FailedSyncs(); got != 1 {
		t.Errorf("FailedSyncs() = %d, want 1", got)
	}
	if got := len(f.Views()); got != 4 {
		t.Errorf("len(Views()) = %d, want 4", got)
	}
	if err := f.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if f.Current() != nil || f.Cleanups() != 1 {
		t.Error("Cleanup left state in force")
	}
	if r := f.Trace(fake.Packet{Src: netip.MustParseAddr("198.18.127.1"), Dst: netip.MustParseAddr("198.19.0.10"), Proto: model.TCP, Port: 80}); r.Verdict != fake.Passed {
		t.Errorf("trace after cleanup = %s, want PASS", r)
	}
}

func TestFakeRejectsCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := fake.New(datapaths.Config{Node: "node-a"})
	if _, err := f.Sync(ctx, view(t), datapaths.SyncOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Sync with a cancelled context = %v", err)
	}
}

func TestRegister(t *testing.T) {
	fake.Register()
	fake.Register() // idempotent
	reg, err := datapaths.Lookup(fake.Name)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := reg.New(datapaths.Config{Node: "node-z"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range fake.Instances() {
		if f == dp {
			found = f.Node() == "node-z"
		}
	}
	if !found {
		t.Error("the factory's fake is not listed by Instances")
	}
}

func TestDump(t *testing.T) {
	f := fake.New(datapaths.Config{Node: "node-a"})
	if _, err := f.Sync(context.Background(), view(t), datapaths.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"default/empty:http 80/TCP clusterIP 198.19.0.20 -> cluster[] local[] (no endpoints: reject)\n" +
		"default/web:http 80/TCP clusterIP 198.19.0.10 nodePort 30080 -> cluster[198.18.64.1:8080] local[]\n"
	if diff := cmp.Diff(want, f.Dump()); diff != "" {
		t.Errorf("Dump() mismatch (-want +got):\n%s", diff)
	}
}

// TestTraceBasics pins a few outcomes directly, independent of the tables.
func TestTraceBasics(t *testing.T) {
	v := view(t)
	pod := netip.MustParseAddr("198.18.127.1")
	ext := netip.MustParseAddr("198.18.0.200")
	node := netip.MustParseAddr("198.18.0.11")
	for _, tc := range []struct {
		name     string
		src, dst string
		port     int32
		proto    model.Protocol
		verdict  fake.Result
		wantEps  []string
		wantMasq bool
	}{
		{name: "pod to ClusterIP", src: pod.String(), dst: "198.19.0.10", port: 80, verdict: fake.Result{Verdict: fake.Forwarded}, wantEps: []string{"web-1"}},
		{name: "external to ClusterIP", src: ext.String(), dst: "198.19.0.10", port: 80, verdict: fake.Result{Verdict: fake.Forwarded}, wantEps: []string{"web-1"}, wantMasq: true},
		{name: "external to NodePort", src: ext.String(), dst: node.String(), port: 30080, verdict: fake.Result{Verdict: fake.Forwarded}, wantEps: []string{"web-1"}, wantMasq: true},
		{name: "hairpin", src: "198.18.64.1", dst: "198.19.0.10", port: 80, verdict: fake.Result{Verdict: fake.Forwarded}, wantEps: []string{"web-1"}, wantMasq: true},
		{name: "UDP to a TCP port", src: pod.String(), dst: "198.19.0.10", port: 80, proto: model.UDP, verdict: fake.Result{Verdict: fake.Passed}},
		{name: "no endpoints", src: pod.String(), dst: "198.19.0.20", port: 80, verdict: fake.Result{Verdict: fake.Rejected}},
		{name: "localhost NodePort, disabled", src: "127.0.0.1", dst: "127.0.0.1", port: 30080, verdict: fake.Result{Verdict: fake.Passed}},
		{name: "nobody's address", src: pod.String(), dst: "198.19.0.99", port: 80, verdict: fake.Result{Verdict: fake.Passed}},
	} {
		proto := tc.proto
		if proto == "" {
			proto = model.TCP
		}
		got := fake.Trace(v, fake.Packet{Src: netip.MustParseAddr(tc.src), Dst: netip.MustParseAddr(tc.dst), Proto: proto, Port: tc.port})
		if got.Verdict != tc.verdict.Verdict || !slices.Equal(got.Names(), tc.wantEps) || got.Masquerade != tc.wantMasq {
			t.Errorf("%s: got %s, want %s %v masq=%v", tc.name, got, tc.verdict.Verdict, tc.wantEps, tc.wantMasq)
		}
	}
}
