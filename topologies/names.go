package topologies

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Name limits. A namespace name is a file name under /run/netns, so the
// kernel would take up to 255 bytes, but 64 keeps `ip netns list` readable
// and leaves room for the prefix in any other tool that copies the name.
const (
	maxLabName = 12
	maxNSName  = 64
	// hashLen is the number of hex digits of sha256 that replace the tail of
	// an over-long name: 8 digits (32 bits) make an accidental collision
	// between two long names of one lab vanishingly unlikely.
	hashLen = 8
)

// Link names inside lab namespaces. Interface names are limited to 15 bytes
// (IFNAMSIZ-1): "prxp" or "prxf" plus a decimal counter fits up to 10^11.
const (
	uplinkName  = "eth0"   // node and external uplink, pod interface
	bridgeName  = "prxbr0" // the fabric bridge
	podPortFmt  = "prxp%d" // node side of a pod veth
	fabPortFmt  = "prxf%d" // fabric side of an uplink veth
	defaultNode = "node-1" // the node made when a cluster names none
)

// Namespace kinds, the letter after the lab name.
const (
	kindNode     = "n"
	kindPod      = "p"
	kindClient   = "c"
	kindExternal = "x"
)

// ValidateName checks a lab name: 1–12 characters of [a-z0-9]. No dash, so
// prx-<lab>- can never be a prefix of another lab's names.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("lab name is empty: want 1-%d characters of [a-z0-9]", maxLabName)
	}
	if len(name) > maxLabName {
		return fmt.Errorf("lab name %q is %d characters long: want at most %d", name, len(name), maxLabName)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("lab name %q has %q: want only [a-z0-9]", name, r)
		}
	}
	if why, ok := reservedNames[name]; ok {
		return fmt.Errorf("lab name %q is reserved: %s", name, why)
	}
	return nil
}

// reservedNames share their prx-<name>- prefix with things that are not
// labs, so a lab of that name would be removed by, or remove, them.
var reservedNames = map[string]string{
	"vm":     "prx-vm- belongs to the VM runner's qemu processes and result directories",
	"doctor": "prx-doctor- belongs to the scratch namespaces of 'proxyrig doctor'",
}

// labPrefix is the prefix of every namespace and process title of a lab.
func labPrefix(lab string) string { return Prefix + lab + "-" }

// sanitize maps a Kubernetes or user-chosen name onto [a-z0-9-.]: upper case
// is folded, anything else (":" of an IPv6 address, "_", "/") becomes "-".
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// shortHash is the first hashLen hex digits of sha256(s).
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:hashLen]
}

// nsName builds prx-<lab>-<kind>-<sanitized name>. A name longer than
// maxNSName keeps its first maxNSName-1-hashLen bytes and ends in "-" plus a
// hash of the unsanitized name, so two long names sharing a prefix differ.
func nsName(lab, kind, name string) string {
	full := labPrefix(lab) + kind + "-" + sanitize(name)
	if len(full) <= maxNSName {
		return full
	}
	return full[:maxNSName-1-hashLen] + "-" + shortHash(kind+"/"+name)
}

// nsNameHashed is nsName with a hash of key appended, for two objects whose
// sanitized names collide (web_0 and web-0, or one pod name on two nodes).
func nsNameHashed(lab, kind, name, key string) string {
	suffix := "-" + shortHash(key)
	full := labPrefix(lab) + kind + "-" + sanitize(name)
	if len(full)+len(suffix) > maxNSName {
		full = full[:maxNSName-len(suffix)]
	}
	return full + suffix
}

func fabricNSName(lab string) string { return labPrefix(lab) + "fabric" }

func externalName(i int) string { return "external-" + strconv.Itoa(i) }

func clientName(node string) string { return "client-" + node }
