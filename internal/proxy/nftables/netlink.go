package nftables

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"iter"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"sigs.k8s.io/knftables"
)

// Most partial syncs change map and set elements only (an endpoint moved, a
// ClusterIP's endpoint count changed). Through the nft binary each such
// transaction costs a process start and, worse, a wait for an RCU grace
// period when the process exits: on closing an nftables netlink socket the
// kernel flushes the pending destruction of deleted elements (~10-30 ms).
// realInterface sends element-only transactions itself, as one netlink
// batch on a connection it keeps open, and everything else through nft.

// elementWriter applies one transaction of element deletions then
// additions atomically (writeElements), or one transaction of tx, the
// element changes, then after (runWithElements).
type elementWriter interface {
	writeElements(dels, adds []elemWant) error
	runWithElements(ctx context.Context, tx *knftables.Transaction, dels, adds []elemWant, after *knftables.Transaction) error
}

// elementsPerCommand bounds one "add element" command: nft evaluates a
// command with many elements much faster than as many one-element commands
// (knftables writes one command per element), ~35% of a 10k-service load.
const elementsPerCommand = 1000

// runWithElements runs tx, the element deletions and additions (batched
// into few commands), and after as one nft transaction. The text is
// streamed to nft's stdin rather than built in memory first (at 10k
// services it is ~7 MB).
func (r *realInterface) runWithElements(ctx context.Context, tx *knftables.Transaction, dels, adds []elemWant, after *knftables.Transaction) error {
	head, tail := tx.String(), after.String()
	for _, t := range []string{head, tail} {
		if i := strings.Index(t, "# ERROR: "); i >= 0 {
			// knftables refused an object; its String says why.
			return fmt.Errorf("nftables: invalid transaction: %s", t[i:])
		}
	}
	family := string(r.family) // "ip" or "ip6", as in nft commands
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	w := bufio.NewWriterSize(stdin, 64<<10)
	w.WriteString(head)
	writeElementCommands(w, "delete", family, dels)
	writeElementCommands(w, "add", family, adds)
	w.WriteString(tail)
	werr := w.Flush()
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if werr != nil {
		return fmt.Errorf("nft: writing the transaction: %w", werr)
	}
	return nil
}

// writeElementCommands writes "VERB element FAMILY svcnet CONTAINER { … }"
// commands for elems (sorted by container), at most elementsPerCommand
// elements each. Deletions name the key only.
func writeElementCommands(buf *bufio.Writer, verb, family string, elems []elemWant) {
	for run := range containerRuns(elems, elementsPerCommand) {
		fmt.Fprintf(buf, "%s element %s %s %s { ", verb, family, tableName, run[0].container)
		for i, e := range run {
			if i > 0 {
				buf.WriteString(", ")
			}
			buf.WriteString(e.key)
			if verb == "add" && e.value != "" {
				buf.WriteString(" : ")
				buf.WriteString(e.value)
			}
		}
		buf.WriteString(" }\n")
	}
}

// containerRuns yields elems (sorted by container) in runs of one
// container, at most max elements each.
func containerRuns(elems []elemWant, max int) iter.Seq[[]elemWant] {
	return func(yield func([]elemWant) bool) {
		for len(elems) > 0 {
			n := 1
			for n < len(elems) && n < max && elems[n].container == elems[0].container {
				n++
			}
			if !yield(elems[:n]) {
				return
			}
			elems = elems[n:]
		}
	}
}

// realInterface is the nft binary (knftables) plus a lasting netlink
// connection for element-only transactions.
type realInterface struct {
	knftables.Interface
	family knftables.Family

	mu   sync.Mutex
	conn *gnft.Conn
	// batches counts the element batches sent (for tests).
	batches int
}

var _ elementWriter = (*realInterface)(nil)

// closeConn closes the netlink connection (the next element-only sync
// opens a new one).
func (r *realInterface) closeConn() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		_ = r.conn.CloseLasting()
		r.conn = nil
	}
}

// elementsPerMessage bounds one netlink element message: its element list
// is one attribute, whose length field has 16 bits (64 KiB), and an IPv6
// element takes up to ~100 bytes.
const elementsPerMessage = 256

func (r *realInterface) writeElements(dels, adds []elemWant) (err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		c, err := gnft.New(gnft.AsLasting())
		if err != nil {
			return fmt.Errorf("nftables: netlink connection: %w", err)
		}
		r.conn = c
	}
	defer func() {
		if err != nil {
			// Drop the messages queued so far, and start over with a
			// fresh socket next time.
			_ = r.conn.CloseLasting()
			r.conn = nil
		}
	}()
	ipv6 := r.family == knftables.IPv6Family
	table := &gnft.Table{Name: tableName, Family: gnft.TableFamilyIPv4}
	if ipv6 {
		table.Family = gnft.TableFamilyIPv6
	}
	// Deletions before additions, one message per run of one container.
	for _, op := range []struct {
		elems []elemWant
		del   bool
	}{{dels, true}, {adds, false}} {
		for run := range containerRuns(op.elems, elementsPerMessage) {
			els := make([]gnft.SetElement, len(run))
			for i, w := range run {
				if op.del {
					w.value = "" // a deletion names the key only
				}
				if els[i], err = encodeElement(w, ipv6); err != nil {
					return err
				}
			}
			set := &gnft.Set{Table: table, Name: run[0].container.String()}
			if op.del {
				err = r.conn.SetDeleteElements(set, els)
			} else {
				err = r.conn.SetAddElements(set, els)
			}
			if err != nil {
				return fmt.Errorf("nftables: %s elements: %w", set.Name, err)
			}
		}
	}
	if err := r.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: element batch: %w", err)
	}
	r.batches++
	return nil
}

// Key and value layouts of the element containers, as the kernel stores
// them: each part of a concatenation takes a multiple of 4 bytes.
type part int

const (
	pAddr  part = iota
	pProto      // one byte
	pPort       // two bytes, network order
	pSlot       // numgen result: 32 bits, host order
)

var keyLayouts = map[string][]part{
	clusterIPsSet:          {pAddr},
	nodePortIPsSet:         {pAddr},
	hairpinSet:             {pAddr, pAddr, pProto, pPort},
	serviceIPsMap:          {pAddr, pProto, pPort},
	noEndpointServicesMap:  {pAddr, pProto, pPort},
	firewallIPsMap:         {pAddr, pProto, pPort},
	endpointPortsMap:       {pAddr, pProto, pPort},
	serviceNodePortsMap:    {pProto, pPort},
	noEndpointNodePortsMap: {pProto, pPort},
	endpointSlotsMap:       {pAddr, pProto, pPort, pSlot},
	singleEndpointMap:      {pAddr, pProto, pPort},
}

// valueLayouts are the non-verdict map values.
var valueLayouts = map[string][]part{
	endpointSlotsMap:  {pAddr},
	endpointPortsMap:  {pPort},
	singleEndpointMap: {pAddr, pPort},
}

// encodeElement turns one element as text ("10.96.0.10 . tcp . 80") into
// its netlink form.
func encodeElement(w elemWant, ipv6 bool) (gnft.SetElement, error) {
	layout, ok := keyLayouts[w.container.String()]
	if !ok {
		return gnft.SetElement{}, fmt.Errorf("nftables: no netlink layout for %q", w.container)
	}
	key, err := encodeConcat(layout, w.key, ipv6)
	if err != nil {
		return gnft.SetElement{}, fmt.Errorf("nftables: %s key %q: %w", w.container, w.key, err)
	}
	el := gnft.SetElement{Key: key}
	if !mapContainers[w.container.String()] || w.value == "" {
		return el, nil
	}
	if layout, ok := valueLayouts[w.container.String()]; ok {
		v, err := encodeConcat(layout, w.value, ipv6)
		if err != nil {
			return gnft.SetElement{}, fmt.Errorf("nftables: %s value %q: %w", w.container, w.value, err)
		}
		el.Val = v
		return el, nil
	}
	verdict, chain, _ := strings.Cut(w.value, " ")
	switch verdict {
	case "goto":
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}
	case "jump":
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
	case "drop":
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictDrop}
	case "accept":
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictAccept}
	default:
		return gnft.SetElement{}, fmt.Errorf("nftables: %s: unsupported verdict %q", w.container, w.value)
	}
	return el, nil
}

// encodeConcat encodes "a . b . c" by layout; the parts of a
// concatenation each take a multiple of 4 bytes.
func encodeConcat(layout []part, s string, ipv6 bool) ([]byte, error) {
	words := strings.Split(s, " . ")
	if len(words) != len(layout) {
		return nil, fmt.Errorf("want %d parts", len(layout))
	}
	var out []byte
	for i, p := range layout {
		b, err := encodePart(p, words[i], ipv6)
		if err != nil {
			return nil, err
		}
		if len(layout) > 1 {
			b = pad4(b)
		}
		out = append(out, b...)
	}
	return out, nil
}

func encodePart(p part, s string, ipv6 bool) ([]byte, error) {
	switch p {
	case pAddr:
		a, err := netip.ParseAddr(s)
		if err != nil || a.Is4() == ipv6 {
			return nil, fmt.Errorf("bad address %q", s)
		}
		return a.AsSlice(), nil
	case pProto:
		n, ok := protoNumbers[s]
		if !ok {
			return nil, fmt.Errorf("unknown protocol %q", s)
		}
		return []byte{n}, nil
	case pPort:
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("bad port %q", s)
		}
		return binary.BigEndian.AppendUint16(nil, uint16(n)), nil
	case pSlot:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("bad slot %q", s)
		}
		return binary.NativeEndian.AppendUint32(nil, uint32(n)), nil
	}
	return nil, fmt.Errorf("unknown part %d", p)
}

var protoNumbers = map[string]byte{"tcp": 6, "udp": 17, "sctp": 132}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
