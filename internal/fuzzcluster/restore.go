package fuzzcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Examples reads every examples/*.yaml under the repository root, for
// seeding: fuzz targets pass the relative path from their package.
func Examples(root string) (map[string][]byte, error) {
	paths, err := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no examples/*.yaml under %s", root)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		out[filepath.Base(p)] = b
	}
	return out, nil
}

// Kernel limits that iptables-restore input must respect: a chain name
// is at most 28 characters (XT_EXTENSION_MAXNAMELEN, 29 with the NUL) and a
// comment at most 255 bytes (XT_MAX_COMMENT_LEN, 256 with the NUL).
const (
	MaxChainName  = 28
	MaxComment    = 255
	kubeChainHead = "KUBE-"
)

// RestoreProblems checks iptables-restore input (any number of tables) for
// what iptables-restore itself would refuse or what would leave a packet
// nowhere to go: a rule in an undeclared chain, a jump or goto to a KUBE-
// chain the table does not declare, a chain name or comment over the
// kernel's limits, an unterminated quote, a table without COMMIT.
func RestoreProblems(text string) []string {
	var probs []string
	bad := func(line int, format string, args ...any) {
		if len(probs) < 20 {
			probs = append(probs, fmt.Sprintf("line %d: ", line)+fmt.Sprintf(format, args...))
		}
	}
	table := ""
	declared := map[string]bool{}
	type jump struct {
		line   int
		target string
	}
	var jumps []jump
	endTable := func(line int) {
		for _, j := range jumps {
			if !declared[j.target] {
				bad(j.line, "jump to %s, which table %s does not declare", j.target, table)
			}
		}
		table, jumps = "", nil
		declared = map[string]bool{}
	}
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			if table != "" {
				bad(n, "table %s opened before %s was committed", line[1:], table)
			}
			table = line[1:]
		case line == "COMMIT":
			if table == "" {
				bad(n, "COMMIT outside a table")
			}
			endTable(n)
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if len(name) > MaxChainName {
				bad(n, "chain name %s is %d characters, over iptables' %d", name, len(name), MaxChainName)
			}
			declared[name] = true
		case strings.HasPrefix(line, "-"):
			if table == "" {
				bad(n, "rule outside a table: %s", line)
				continue
			}
			words, err := splitRule(line)
			if err != "" {
				bad(n, "%s: %s", err, line)
				continue
			}
			if len(words) < 2 {
				bad(n, "rule without a chain: %s", line)
				continue
			}
			switch words[0] {
			case "-A":
				if strings.HasPrefix(words[1], kubeChainHead) && !declared[words[1]] {
					bad(n, "rule appended to undeclared chain %s", words[1])
				}
			case "-I", "-D", "-X", "-F":
			default:
				bad(n, "unknown command %s", words[0])
			}
			for k := 2; k < len(words); k++ {
				switch words[k] {
				case "-j", "--jump", "-g", "--goto":
					if k+1 < len(words) && strings.HasPrefix(words[k+1], kubeChainHead) {
						jumps = append(jumps, jump{n, words[k+1]})
					}
				case "--comment":
					if k+1 < len(words) && len(words[k+1]) > MaxComment {
						bad(n, "comment of %d bytes, over iptables' %d", len(words[k+1]), MaxComment)
					}
				}
			}
		default:
			bad(n, "unrecognised line %q", line)
		}
	}
	if table != "" {
		bad(0, "table %s never committed", table)
	}
	return probs
}

// Words splits a line of iptables-restore or nft input into words:
// spaces separate, double quotes group. ok is false on an unterminated
// quote or a control character.
func Words(line string) (words []string, ok bool) {
	w, err := splitRule(line)
	return w, err == ""
}

// splitRule splits a rule into words the way iptables-restore does:
// spaces separate, double quotes group (and are removed), a backslash
// escapes a quote inside them.
func splitRule(line string) ([]string, string) {
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(line) && line[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			inQuote = !inQuote
			have = true
		case c == ' ' && !inQuote:
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			if c == '\n' || c == 0 {
				return nil, "control character in rule"
			}
			cur.WriteByte(c)
			have = true
		}
	}
	if inQuote {
		return nil, "unterminated quote"
	}
	if have {
		words = append(words, cur.String())
	}
	return words, ""
}

// Destinations returns every address a rule of iptables-restore input
// matches with -d (the mask, if any, left on), so that a test can look
// addresses up without scanning the text once per address.
func Destinations(text string) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "-") || !strings.Contains(line, " -d ") {
			continue
		}
		words, ok := Words(line)
		if !ok {
			continue
		}
		for k := 0; k+1 < len(words); k++ {
			if words[k] == "-d" {
				out[words[k+1]] = true
			}
		}
	}
	return out
}
