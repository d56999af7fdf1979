package ebpf

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Packet builders and parsers for the BPF_PROG_TEST_RUN tests: Ethernet +
// IPv4 + TCP/UDP with correct checksums, and a parser that checks them.

var (
	testSrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	testDstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

type pktSpec struct {
	proto    uint8 // protoTCP or protoUDP
	src, dst netip.AddrPort
	flags    uint8 // TCP flags
	seq, ack uint32
	payload  []byte
	ttl      uint8
}

func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return ^uint16(sum)
}

func pseudoSum(src, dst netip.Addr, proto uint8, l4len int) uint32 {
	s, d := src.As4(), dst.As4()
	var ph [12]byte
	copy(ph[0:4], s[:])
	copy(ph[4:8], d[:])
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:], uint16(l4len))
	return csumAdd(0, ph[:])
}

func buildPacket(s pktSpec) []byte {
	var l4 []byte
	switch s.proto {
	case protoTCP:
		l4 = make([]byte, 20+len(s.payload))
		binary.BigEndian.PutUint16(l4[0:], s.src.Port())
		binary.BigEndian.PutUint16(l4[2:], s.dst.Port())
		binary.BigEndian.PutUint32(l4[4:], s.seq)
		binary.BigEndian.PutUint32(l4[8:], s.ack)
		l4[12] = 5 << 4
		l4[13] = s.flags
		binary.BigEndian.PutUint16(l4[14:], 64240)
		copy(l4[20:], s.payload)
		binary.BigEndian.PutUint16(l4[16:], csumFold(csumAdd(pseudoSum(s.src.Addr(), s.dst.Addr(), s.proto, len(l4)), l4)))
	case protoUDP:
		l4 = make([]byte, 8+len(s.payload))
		binary.BigEndian.PutUint16(l4[0:], s.src.Port())
		binary.BigEndian.PutUint16(l4[2:], s.dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], s.payload)
		c := csumFold(csumAdd(pseudoSum(s.src.Addr(), s.dst.Addr(), s.proto, len(l4)), l4))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	ip[8] = ttl
	ip[9] = s.proto
	sa, da := s.src.Addr().As4(), s.dst.Addr().As4()
	copy(ip[12:], sa[:])
	copy(ip[16:], da[:])
	binary.BigEndian.PutUint16(ip[10:], csumFold(csumAdd(0, ip)))

	out := make([]byte, 0, 14+20+len(l4))
	out = append(out, testDstMAC...)
	out = append(out, testSrcMAC...)
	out = append(out, 0x08, 0x00)
	out = append(out, ip...)
	return append(out, l4...)
}

// parsedPacket is what a test checks of a program's output.
type parsedPacket struct {
	dstMAC, srcMAC net.HardwareAddr
	proto          uint8
	ttl            uint8
	src, dst       netip.AddrPort
	flags          uint8
	seq, ack       uint32
	icmpType       uint8
	icmpCode       uint8
	// inner is the quoted packet of an ICMP error.
	innerSrc, innerDst netip.AddrPort
}

func (p parsedPacket) String() string {
	switch p.proto {
	case protoTCP:
		return fmt.Sprintf("TCP %s -> %s flags=%#x seq=%d ack=%d ttl=%d", p.src, p.dst, p.flags, p.seq, p.ack, p.ttl)
	case protoUDP:
		return fmt.Sprintf("UDP %s -> %s ttl=%d", p.src, p.dst, p.ttl)
	case 1:
		return fmt.Sprintf("ICMP %s -> %s type=%d code=%d quoting %s -> %s", p.src.Addr(), p.dst.Addr(), p.icmpType, p.icmpCode, p.innerSrc, p.innerDst)
	}
	return fmt.Sprintf("proto %d", p.proto)
}

// parsePacket decodes an output packet and verifies every checksum in it.
func parsePacket(b []byte) (parsedPacket, error) {
	var p parsedPacket
	if len(b) < 34 {
		return p, fmt.Errorf("packet of %d bytes is too short", len(b))
	}
	p.dstMAC, p.srcMAC = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	totLen := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[0]>>4 != 4 || ihl < 20 || totLen > len(ip) {
		return p, fmt.Errorf("bad IPv4 header %x", ip[:20])
	}
	if c := csumFold(csumAdd(0, ip[:ihl])); c != 0 {
		return p, fmt.Errorf("bad IPv4 header checksum (residue %#x)", c)
	}
	p.proto, p.ttl = ip[9], ip[8]
	src, _ := netip.AddrFromSlice(ip[12:16])
	dst, _ := netip.AddrFromSlice(ip[16:20])
	l4 := ip[ihl:totLen]
	switch p.proto {
	case protoTCP:
		if c := csumFold(csumAdd(pseudoSum(src, dst, p.proto, len(l4)), l4)); c != 0 {
			return p, fmt.Errorf("bad TCP checksum (residue %#x)", c)
		}
		p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		p.seq = binary.BigEndian.Uint32(l4[4:])
		p.ack = binary.BigEndian.Uint32(l4[8:])
		p.flags = l4[13]
	case protoUDP:
		if binary.BigEndian.Uint16(l4[6:]) != 0 {
			if c := csumFold(csumAdd(pseudoSum(src, dst, p.proto, len(l4)), l4)); c != 0 {
				return p, fmt.Errorf("bad UDP checksum (residue %#x)", c)
			}
		}
		p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	case 1:
		if c := csumFold(csumAdd(0, l4)); c != 0 {
			return p, fmt.Errorf("bad ICMP checksum (residue %#x)", c)
		}
		p.src, p.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		p.icmpType, p.icmpCode = l4[0], l4[1]
		inner := l4[8:]
		if len(inner) >= 28 {
			is, _ := netip.AddrFromSlice(inner[12:16])
			id, _ := netip.AddrFromSlice(inner[16:20])
			p.innerSrc = netip.AddrPortFrom(is, binary.BigEndian.Uint16(inner[20:]))
			p.innerDst = netip.AddrPortFrom(id, binary.BigEndian.Uint16(inner[22:]))
		}
	default:
		return p, fmt.Errorf("unexpected protocol %d", p.proto)
	}
	return p, nil
}

// fragment splits an IPv4 packet built by buildPacket into two fragments:
// the first carries the L4 header and the first 'first' bytes of L4 data.
func fragment(pkt []byte, first int) (a, b []byte) {
	eth, ip, l4 := pkt[:14], pkt[14:34], pkt[34:]
	mk := func(off int, data []byte, more bool) []byte {
		h := append([]byte(nil), ip...)
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(data)))
		fo := uint16(off / 8)
		if more {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		h[10], h[11] = 0, 0
		binary.BigEndian.PutUint16(h[10:], csumFold(csumAdd(0, h)))
		out := append(append([]byte(nil), eth...), h...)
		return append(out, data...)
	}
	return mk(0, l4[:first], true), mk(first, l4[first:], false)
}

// parseIPv4Only decodes addresses of a fragment and checks the IP checksum.
func parseIPv4Only(b []byte) (src, dst netip.Addr, err error) {
	ip := b[14:34]
	if c := csumFold(csumAdd(0, ip)); c != 0 {
		return src, dst, fmt.Errorf("bad IPv4 header checksum (residue %#x)", c)
	}
	src, _ = netip.AddrFromSlice(ip[12:16])
	dst, _ = netip.AddrFromSlice(ip[16:20])
	return src, dst, nil
}

func pseudoSum6(src, dst netip.Addr, proto uint8, l4len int) uint32 {
	s, d := src.As16(), dst.As16()
	var ph [40]byte
	copy(ph[0:16], s[:])
	copy(ph[16:32], d[:])
	binary.BigEndian.PutUint32(ph[32:], uint32(l4len))
	ph[39] = proto
	return csumAdd(0, ph[:])
}

// buildPacket6 is buildPacket for IPv6 (no extension headers).
func buildPacket6(s pktSpec) []byte {
	var l4 []byte
	switch s.proto {
	case protoTCP:
		l4 = make([]byte, 20+len(s.payload))
		binary.BigEndian.PutUint16(l4[0:], s.src.Port())
		binary.BigEndian.PutUint16(l4[2:], s.dst.Port())
		binary.BigEndian.PutUint32(l4[4:], s.seq)
		binary.BigEndian.PutUint32(l4[8:], s.ack)
		l4[12] = 5 << 4
		l4[13] = s.flags
		binary.BigEndian.PutUint16(l4[14:], 64240)
		copy(l4[20:], s.payload)
		binary.BigEndian.PutUint16(l4[16:], csumFold(csumAdd(pseudoSum6(s.src.Addr(), s.dst.Addr(), s.proto, len(l4)), l4)))
	case protoUDP:
		l4 = make([]byte, 8+len(s.payload))
		binary.BigEndian.PutUint16(l4[0:], s.src.Port())
		binary.BigEndian.PutUint16(l4[2:], s.dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], s.payload)
		c := csumFold(csumAdd(pseudoSum6(s.src.Addr(), s.dst.Addr(), s.proto, len(l4)), l4))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	ip[6] = s.proto
	ip[7] = 64
	sa, da := s.src.Addr().As16(), s.dst.Addr().As16()
	copy(ip[8:], sa[:])
	copy(ip[24:], da[:])
	out := append(append(append([]byte(nil), testDstMAC...), testSrcMAC...), 0x86, 0xdd)
	out = append(out, ip...)
	return append(out, l4...)
}

// parsePacket6 decodes an IPv6 output packet and verifies its checksums.
func parsePacket6(b []byte) (parsedPacket, error) {
	var p parsedPacket
	if len(b) < 54 || b[12] != 0x86 || b[13] != 0xdd {
		return p, fmt.Errorf("not an IPv6 packet: %x", b[:min(len(b), 20)])
	}
	p.dstMAC, p.srcMAC = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	ip := b[14:]
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if 40+plen > len(ip) {
		return p, fmt.Errorf("payload length %d beyond the packet", plen)
	}
	p.proto, p.ttl = ip[6], ip[7]
	src, _ := netip.AddrFromSlice(ip[8:24])
	dst, _ := netip.AddrFromSlice(ip[24:40])
	l4 := ip[40 : 40+plen]
	if c := csumFold(csumAdd(pseudoSum6(src, dst, p.proto, len(l4)), l4)); c != 0 {
		return p, fmt.Errorf("bad L4 checksum (residue %#x) for protocol %d", c, p.proto)
	}
	switch p.proto {
	case protoTCP:
		p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		p.seq = binary.BigEndian.Uint32(l4[4:])
		p.ack = binary.BigEndian.Uint32(l4[8:])
		p.flags = l4[13]
	case protoUDP:
		p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	case 58:
		p.src, p.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		p.icmpType, p.icmpCode = l4[0], l4[1]
		inner := l4[8:]
		if len(inner) >= 48 {
			is, _ := netip.AddrFromSlice(inner[8:24])
			id, _ := netip.AddrFromSlice(inner[24:40])
			p.innerSrc = netip.AddrPortFrom(is, binary.BigEndian.Uint16(inner[40:]))
			p.innerDst = netip.AddrPortFrom(id, binary.BigEndian.Uint16(inner[42:]))
		}
	default:
		return p, fmt.Errorf("unexpected protocol %d", p.proto)
	}
	return p, nil
}
