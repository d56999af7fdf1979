package iptables

import (
	"proxyrig/datapaths"
	"proxyrig/datapaths/internal/staleudp"
)

// newStaleUDPFilter is kube-proxy's stale-UDP conntrack filter for one
// family (datapaths/internal/staleudp, shared with the other mode that
// leaves load balancing to conntrack).
func newStaleUDPFilter(view *datapaths.NodeView, f Family) *staleudp.Filter {
	return staleudp.New(view, f == IPv6)
}

// cleanStaleUDP deletes stale UDP entries of both families in the node's
// namespace and returns how many it deleted, as kube-proxy does after
// every sync.
func (p *Proxier) cleanStaleUDP(view *datapaths.NodeView) (int, error) {
	h, err := p.cfg.NS.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	return staleudp.Clean(h, view)
}
