package model_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"proxyrig/loadgen"
	"proxyrig/model"
)

const fuzzFile = "fuzz.yaml"

// FuzzParse feeds arbitrary bytes to the parser. Whatever the input, Parse
// must return (no panic, no hang) either a cluster or errors; every error
// must be a *FieldError naming the file; a cluster must pass Validate, be
// sorted, parse identically twice, and survive a round trip: written back
// as Kubernetes YAML it parses into the same cluster.
//
// Seeds: examples/*.yaml, model/testdata and loadgen's seeded clusters
// written as YAML.
//
// Run: go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 30s ./model
func FuzzParse(f *testing.F) {
	for _, glob := range []string{"../examples/*.yaml", "testdata/*.yaml"} {
		files, err := filepath.Glob(glob)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	for seed := uint64(1); seed <= 4; seed++ {
		c, err := loadgen.Generate(loadgen.Spec{Services: 6, EndpointsPerService: 3, Seed: seed, Nodes: 1 + int(seed%3), PortsPerService: 1 + int(seed%2)})
		if err != nil {
			f.Fatal(err)
		}
		b, err := clusterYAML(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := model.Parse(fuzzFile, data)
		if err != nil {
			checkParseError(t, err)
			return
		}
		checkParsed(t, data, c)
	})
}

func checkParseError(t *testing.T, err error) {
	t.Helper()
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	} else {
		all = []error{err}
	}
	fes := model.FieldErrors(err)
	if len(fes) == 0 || len(fes) != len(all) {
		t.Fatalf("%d errors, %d of them *FieldError: %v", len(all), len(fes), err)
	}
	for _, fe := range fes {
		if fe.Origin.File != fuzzFile || !strings.HasPrefix(fe.Error(), fuzzFile+": ") || fe.Msg == "" {
			t.Errorf("error does not name the file, or says nothing: %q (%+v)", fe.Error(), fe)
		}
		var target *model.FieldError
		if !errors.As(err, &target) {
			t.Errorf("errors.As(*FieldError) fails")
		}
	}
}

func checkParsed(t *testing.T, data []byte, c *model.Cluster) {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatalf("Parse accepted a cluster that Validate refuses:\n%v", err)
	}
	if !slices.IsSortedFunc(c.Services, func(a, b *model.Service) int { return strings.Compare(a.Name.String(), b.Name.String()) }) {
		t.Error("Services are not sorted by namespace/name")
	}
	if !slices.IsSortedFunc(c.Nodes, func(a, b *model.Node) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("Nodes are not sorted by name")
	}
	again, err := model.Parse(fuzzFile, data)
	if err != nil || !reflect.DeepEqual(c, again) {
		t.Fatalf("a second Parse of the same bytes differs (err %v)", err)
	}
	out, err := clusterYAML(c)
	if err != nil {
		t.Fatalf("write the cluster back as YAML: %v", err)
	}
	back, err := model.Parse("roundtrip.yaml", out)
	if err != nil {
		t.Fatalf("the cluster written back does not parse: %v\n%s", err, out)
	}
	if diff := cmp.Diff(normalize(c), normalize(back), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Fatalf("round trip changed the cluster (-parsed +reparsed):\n%s\nwritten:\n%s", diff, out)
	}
}

// normalize drops what a round trip may legitimately change: where objects
// came from, and the warnings.
func normalize(c *model.Cluster) *model.Cluster {
	c = c.Clone()
	c.Warnings = nil
	for _, s := range c.Services {
		s.Origin = model.Origin{}
	}
	for _, n := range c.Nodes {
		n.Origin = model.Origin{}
	}
	return c
}

// clusterYAML writes c the way `kubectl get svc,endpointslices,nodes -o
// yaml` would show it: one Service per model Service, one EndpointSlice per
// Service port, address family and endpoint port, one Node per explicit
// node.
func clusterYAML(c *model.Cluster) ([]byte, error) {
	var docs [][]byte
	add := func(obj any) error {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		docs = append(docs, b)
		return nil
	}
	for _, n := range c.Nodes {
		if n.Implicit {
			continue
		}
		k := corev1.Node{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels},
		}
		for _, a := range n.Addresses {
			k.Status.Addresses = append(k.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
		}
		if err := add(k); err != nil {
			return nil, err
		}
	}
	for _, s := range c.Services {
		if err := add(serviceObject(s)); err != nil {
			return nil, err
		}
		n := 0
		for _, p := range s.Ports {
			type group struct {
				fam  discoveryv1.AddressType
				port int32
			}
			groups := map[group][]*model.Endpoint{}
			var order []group
			for _, ep := range p.Endpoints {
				g := group{discoveryv1.AddressTypeIPv4, ep.Port}
				if ep.IP.Is6() {
					g.fam = discoveryv1.AddressTypeIPv6
				}
				if groups[g] == nil {
					order = append(order, g)
				}
				groups[g] = append(groups[g], ep)
			}
			for _, g := range order {
				sl := discoveryv1.EndpointSlice{
					TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
					ObjectMeta: metav1.ObjectMeta{
						Name:      fmt.Sprintf("%s-%d", s.Name.Name, n),
						Namespace: s.Name.Namespace,
						Labels:    map[string]string{discoveryv1.LabelServiceName: s.Name.Name},
					},
					AddressType: g.fam,
					Ports: []discoveryv1.EndpointPort{{
						Name: ptr(p.Name), Protocol: ptr(corev1.Protocol(p.Protocol)), Port: ptr(g.port),
					}},
				}
				n++
				for _, ep := range groups[g] {
					e := discoveryv1.Endpoint{
						Addresses: []string{ep.IP.String()},
						Conditions: discoveryv1.EndpointConditions{
							Ready: ptr(ep.Ready), Serving: ptr(ep.Serving), Terminating: ptr(ep.Terminating),
						},
					}
					if ep.Name != ep.IP.String() {
						e.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: ep.Name, Namespace: s.Name.Namespace}
					}
					if ep.NodeName != "" {
						e.NodeName = ptr(ep.NodeName)
					}
					if ep.Zone != "" {
						e.Zone = ptr(ep.Zone)
					}
					if ep.ZoneHints != nil || ep.NodeHints != nil {
						e.Hints = &discoveryv1.EndpointHints{}
						for _, z := range ep.ZoneHints {
							e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
						}
						for _, n := range ep.NodeHints {
							e.Hints.ForNodes = append(e.Hints.ForNodes, discoveryv1.ForNode{Name: n})
						}
					}
					sl.Endpoints = append(sl.Endpoints, e)
				}
				if err := add(sl); err != nil {
					return nil, err
				}
			}
		}
	}
	return slices.Concat(joinDocs(docs)...), nil
}

func joinDocs(docs [][]byte) [][]byte {
	var out [][]byte
	for _, d := range docs {
		out = append(out, []byte("---\n"), d)
	}
	return out
}

func serviceObject(s *model.Service) corev1.Service {
	k := corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: s.Name.Name, Namespace: s.Name.Namespace},
	}
	spec := &k.Spec
	spec.Type = corev1.ServiceType(s.Type)
	switch {
	case s.Type == model.ExternalName:
		spec.ExternalName = "db.example.org"
	case s.Headless:
		spec.ClusterIP = corev1.ClusterIPNone
	default:
		for _, ip := range s.ClusterIPs {
			spec.ClusterIPs = append(spec.ClusterIPs, ip.String())
		}
	}
	spec.ExternalIPs = addrStrings(s.ExternalIPs)
	for _, ip := range s.LoadBalancerIPs {
		k.Status.LoadBalancer.Ingress = append(k.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String()})
	}
	for _, p := range s.LoadBalancerSourceRanges {
		spec.LoadBalancerSourceRanges = append(spec.LoadBalancerSourceRanges, p.String())
	}
	if s.SessionAffinity {
		spec.SessionAffinity = corev1.ServiceAffinityClientIP
		secs := int32(s.AffinityTimeout.Seconds())
		spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &secs}}
	}
	spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicy(s.ExternalTrafficPolicy)
	itp := corev1.ServiceInternalTrafficPolicy(s.InternalTrafficPolicy)
	spec.InternalTrafficPolicy = &itp
	if s.TrafficDistribution != "" {
		spec.TrafficDistribution = ptr(s.TrafficDistribution)
	}
	spec.HealthCheckNodePort = s.HealthCheckNodePort
	for _, p := range s.Ports {
		sp := corev1.ServicePort{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), Port: p.Port, NodePort: p.NodePort}
		if n, err := strconv.Atoi(p.TargetPort); err == nil && strconv.Itoa(n) == p.TargetPort {
			sp.TargetPort = intstr.FromInt32(int32(n))
		} else {
			sp.TargetPort = intstr.FromString(p.TargetPort)
		}
		if s.Type == model.LoadBalancer && p.NodePort == 0 {
			spec.AllocateLoadBalancerNodePorts = ptr(false)
		}
		spec.Ports = append(spec.Ports, sp)
	}
	return k
}

func addrStrings(in []netip.Addr) []string {
	var out []string
	for _, a := range in {
		out = append(out, a.String())
	}
	return out
}

func ptr[T any](v T) *T { return &v }
