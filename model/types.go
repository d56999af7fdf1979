// Package model is proxyrig's compact, validated picture of a cluster: what a
// Service proxy needs to know and nothing more. Input arrives as Kubernetes'
// own objects (v1 Service, discovery.k8s.io/v1 EndpointSlice, v1 Node, v1
// List); Parse turns them into a Cluster. Datapaths never see k8s.io/api
// types, only this package.
//
// A Cluster is immutable once built: datapaths and the lab read it from many
// goroutines. Build a new one to change anything.
package model

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Protocol is a Service port's L4 protocol, spelled as in the Kubernetes API.
type Protocol string

const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	SCTP Protocol = "SCTP"
)

// ServiceType mirrors v1.ServiceType.
type ServiceType string

const (
	ClusterIP    ServiceType = "ClusterIP"
	NodePort     ServiceType = "NodePort"
	LoadBalancer ServiceType = "LoadBalancer"
	ExternalName ServiceType = "ExternalName"
)

// TrafficPolicy is the value of externalTrafficPolicy / internalTrafficPolicy.
type TrafficPolicy string

const (
	PolicyCluster TrafficPolicy = "Cluster"
	PolicyLocal   TrafficPolicy = "Local"
)

// DefaultAffinityTimeout is kube-proxy's default ClientIP affinity timeout
// (v1.DefaultClientIPServiceAffinitySeconds).
const DefaultAffinityTimeout = 10800 * time.Second

// Origin says where an object came from, for error messages.
type Origin struct {
	File string // path as given by the user, or "<generated>"
	Doc  int    // 0-based YAML document index in the file
	Kind string // Service, EndpointSlice, Node
	Name string // namespace/name, or name for cluster-scoped objects
}

func (o Origin) String() string {
	if o.File == "" {
		return fmt.Sprintf("%s %s", o.Kind, o.Name)
	}
	return fmt.Sprintf("%s: %s %s", o.File, o.Kind, o.Name)
}

// FieldError is a validation or parse error that names the file, the object
// and the field (a JSON path such as spec.ports[1].nodePort).
type FieldError struct {
	Origin Origin
	Field  string
	Msg    string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.Origin, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.Origin, e.Field, e.Msg)
}

// ServiceName identifies a Service.
type ServiceName struct {
	Namespace string
	Name      string
}

func (n ServiceName) String() string { return n.Namespace + "/" + n.Name }

// Compare orders names as comparing their String forms does, without
// building those strings: renderers sort 10,000 Services, which would
// build them some 300,000 times.
func (n ServiceName) Compare(o ServiceName) int {
	if n.Namespace == o.Namespace {
		return strings.Compare(n.Name, o.Name)
	}
	x, y := n.Namespace, o.Namespace
	switch {
	case strings.HasPrefix(y, x): // x + "/" against y: '/' meets y[len(x)]
		return cmp.Compare('/', y[len(x)])
	case strings.HasPrefix(x, y):
		return cmp.Compare(x[len(y)], '/')
	}
	return strings.Compare(x, y)
}

// Cluster is the whole desired state. Services and Nodes are sorted by name
// so every consumer iterates in the same order and renders byte-identical
// output for identical input.
type Cluster struct {
	Services []*Service
	Nodes    []*Node
	// Warnings are things the parser skipped without failing, such as
	// objects of kinds a proxy does not read (a Deployment in the file).
	Warnings []string
}

// Node is a cluster node. Addresses are ordered with the primary address of
// each family first (InternalIP before ExternalIP, IPv4 before IPv6 unless
// the node lists IPv6 first).
type Node struct {
	Name      string
	Addresses []netip.Addr
	Zone      string            // topology.kubernetes.io/zone label, "" if none
	Labels    map[string]string // all labels, for topology decisions
	// Implicit is true when no Node object named this node and it was
	// created because an endpoint's nodeName referred to it.
	Implicit bool
	Origin   Origin
}

// Service is one v1 Service as a proxy needs it.
type Service struct {
	Name   ServiceName
	Type   ServiceType
	Origin Origin

	// ClusterIPs holds spec.clusterIPs (or spec.clusterIP), primary family
	// first. Empty for headless Services and ExternalName Services.
	ClusterIPs []netip.Addr
	// Headless is spec.clusterIP == "None". Headless and ExternalName
	// Services produce no datapath state.
	Headless bool

	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr // status.loadBalancer.ingress[].ip
	// LoadBalancerSourceRanges holds the parsed, masked prefixes (leading and
	// trailing spaces are tolerated, as kube-proxy does).
	LoadBalancerSourceRanges []netip.Prefix

	SessionAffinity bool          // sessionAffinity: ClientIP
	AffinityTimeout time.Duration // only meaningful with SessionAffinity

	ExternalTrafficPolicy TrafficPolicy // defaulted to Cluster
	InternalTrafficPolicy TrafficPolicy // defaulted to Cluster
	TrafficDistribution   string        // spec.trafficDistribution, "" if unset
	HealthCheckNodePort   int32         // 0 if none

	Ports []*ServicePort
}

// ServicePort is one entry of spec.ports, with the endpoints that kube-proxy
// would associate with it after merging every EndpointSlice of the Service
// and matching ports by name and protocol.
type ServicePort struct {
	Name     string
	Protocol Protocol
	Port     int32
	NodePort int32 // 0 if none
	// TargetPort is spec.ports[].targetPort as written, number or name; for
	// information only: the endpoint's port number comes from its slice.
	TargetPort string

	// Endpoints are deduplicated by IP and port, sorted by IP then port.
	// Both address families may appear for a dual-stack Service.
	Endpoints []*Endpoint
}

// Endpoint is one endpoint address of one Service port.
type Endpoint struct {
	IP   netip.Addr
	Port int32
	// Name is the EndpointSlice targetRef.name, or the IP when there is none.
	// Echo servers answer with it.
	Name     string
	NodeName string // "" if the slice did not say
	Zone     string // endpoint.zone, "" if unset
	// ZoneHints and NodeHints are hints.forZones / hints.forNodes names;
	// nil when the endpoint has no such hints.
	ZoneHints []string
	NodeHints []string

	// Conditions, defaulted the way kube-proxy reads them.
	Ready       bool
	Serving     bool
	Terminating bool
}

// String is the endpoint as kube-proxy prints it: "ip:port" or "[ip]:port".
func (e *Endpoint) String() string {
	return netip.AddrPortFrom(e.IP, uint16(e.Port)).String()
}

// IsProxied reports whether a Service produces datapath state at all.
func (s *Service) IsProxied() bool {
	return !s.Headless && s.Type != ExternalName && len(s.ClusterIPs) > 0
}

// ExternallyAccessible reports whether the Service has any entry point that
// traffic from outside the cluster can use (NodePort, ExternalIP, LB IP);
// eTP only applies to those (kube-proxy ExternallyAccessible()).
func (s *Service) ExternallyAccessible() bool {
	if len(s.ExternalIPs) > 0 || len(s.LoadBalancerIPs) > 0 {
		return true
	}
	for _, p := range s.Ports {
		if p.NodePort != 0 {
			return true
		}
	}
	return false
}

// ExternalPolicyLocal is eTP=Local on a Service where it has effect.
func (s *Service) ExternalPolicyLocal() bool {
	return s.ExternalTrafficPolicy == PolicyLocal && s.ExternallyAccessible()
}

// InternalPolicyLocal is iTP=Local.
func (s *Service) InternalPolicyLocal() bool { return s.InternalTrafficPolicy == PolicyLocal }

// Service finds a Service by name, or nil.
func (c *Cluster) Service(namespace, name string) *Service {
	for _, s := range c.Services {
		if s.Name.Namespace == namespace && s.Name.Name == name {
			return s
		}
	}
	return nil
}

// Node finds a node by name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}
