package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// goalP99 is acceptance point 4's bound for pod Ready → EndpointSlice.
const goalP99 = 50 * time.Millisecond

// latencies of one scenario.
type latencies struct {
	fromWritten []time.Duration // status write returned → slice seen
	fromSent    []time.Duration // status write sent → slice seen
	write       []time.Duration // the status write itself
	missing     int
}

type row struct {
	name string
	l    latencies
	goal bool // this row is judged against goalP99
}

type coldResult struct {
	services, podsPer, wantServices int
	createTime                      time.Duration

	mu        sync.Mutex // guards cacheSync
	cacheSync time.Duration

	firstSlice, slices, endpoints time.Duration
	timedOut                      bool
	slicesDone, endpointsDone     int
}

type report struct {
	start    time.Time
	rows     []row
	cold     *coldResult
	phaseCPU []string
}

func (r *report) add(name string, l latencies, goal bool) {
	r.rows = append(r.rows, row{name: name, l: l, goal: goal})
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + " ms" }

func (r *report) print(o options) {
	fmt.Println()
	fmt.Println("1. Endpoint propagation: pod status write → EndpointSlice endpoint seen by a separate watcher")
	fmt.Println("   (one transition at a time, a pause of", o.gap, "between them; 'from write' starts when the status write returned)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tn\tp50\tp90\tp99\tmax\tp99 from send\tp50 write\tmissing\t")
	for _, rw := range r.rows {
		l := rw.l
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", rw.name, len(l.fromWritten),
			ms(percentile(l.fromWritten, .5)), ms(percentile(l.fromWritten, .9)), ms(percentile(l.fromWritten, .99)),
			ms(percentile(l.fromWritten, 1)), ms(percentile(l.fromSent, .99)), ms(percentile(l.write, .5)), l.missing)
	}
	tw.Flush()

	if c := r.cold; c != nil {
		fmt.Println()
		fmt.Println("2. Cold start: objects created with the controllers stopped, then fresh controllers started")
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		writes := c.services * (1 + 2*c.podsPer) // Service, pod create, pod status
		c.mu.Lock()
		cacheSync := c.cacheSync
		c.mu.Unlock()
		fmt.Fprintln(tw, "measure\tvalue\t")
		fmt.Fprintf(tw, "Services × pods created\t%d × %d (asked %d × %d)\t\n", c.services, c.podsPer, c.wantServices, c.podsPer)
		fmt.Fprintf(tw, "creation time (%d API writes)\t%s (%.0f writes/s)\t\n", writes, c.createTime.Round(time.Second),
			float64(writes)/c.createTime.Seconds())
		fmt.Fprintf(tw, "controllers' informer caches synced\t%s\t\n", cacheSync.Round(time.Millisecond))
		fmt.Fprintf(tw, "first endpoint in a slice\t%s\t\n", c.firstSlice.Round(time.Millisecond))
		if c.timedOut {
			fmt.Fprintf(tw, "converged\tNO: after %s, %d/%d Services complete in slices, %d/%d in Endpoints\t\n",
				o.coldTimeout, c.slicesDone, c.services, c.endpointsDone, c.services)
		} else {
			fmt.Fprintf(tw, "all EndpointSlices complete\t%s (%.0f Services/s)\t\n", c.slices.Round(time.Millisecond), float64(c.services)/c.slices.Seconds())
			fmt.Fprintf(tw, "all Endpoints complete\t%s\t\n", c.endpoints.Round(time.Millisecond))
		}
		if c.services < c.wantServices && c.services > 0 && !c.timedOut {
			f := float64(c.wantServices) / float64(c.services)
			fmt.Fprintf(tw, "extrapolated to %d × %d (linear)\tcreation %s, slices converge %s\t\n", c.wantServices, c.podsPer,
				time.Duration(float64(c.createTime)*f).Round(time.Second), time.Duration(float64(c.slices)*f).Round(time.Second))
		}
		tw.Flush()
	}

	fmt.Println()
	fmt.Println("0. CPU (this process = API server + etcd + controllers + bench clients; other = the rest of the machine)")
	for _, p := range r.phaseCPU {
		fmt.Println("  ", p)
	}

	fmt.Println()
	fmt.Println("Goals (issue 3, acceptance 4)")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "goal\tmeasured\tresult\t")
	for _, rw := range r.rows {
		if !rw.goal {
			continue
		}
		p99 := percentile(rw.l.fromWritten, .99)
		res := "PASS"
		if p99 > goalP99 || rw.l.missing > 0 || len(rw.l.fromWritten) == 0 {
			res = "MISS"
		}
		fmt.Fprintf(tw, "pod Ready → EndpointSlice p99 ≤ 50 ms (%s)\t%s\t%s\t\n", rw.name, ms(p99), res)
	}
	if c := r.cold; c != nil {
		res, val := "reported", ""
		switch {
		case c.timedOut:
			res, val = "MISS", "did not converge within "+o.coldTimeout.String()
		case c.services < c.wantServices:
			val = fmt.Sprintf("%s at %d×%d (extrapolated %s at %d×%d)", c.slices.Round(time.Millisecond), c.services, c.podsPer,
				time.Duration(float64(c.slices)*float64(c.wantServices)/float64(max(1, c.services))).Round(time.Second), c.wantServices, c.podsPer)
		default:
			val = fmt.Sprintf("%s at %d×%d", c.slices.Round(time.Millisecond), c.services, c.podsPer)
		}
		fmt.Fprintf(tw, "cold start converges (10k Services × 10 pods)\t%s\t%s\t\n", val, res)
	}
	tw.Flush()
}

// cpuPhase measures where CPU went during a phase.
type cpuPhase struct {
	at          time.Time
	busy, procs time.Duration
}

func startCPU() cpuPhase {
	return cpuPhase{at: time.Now(), busy: machineBusy(), procs: selfCPU()}
}

func (c cpuPhase) end(name string) string {
	wall := time.Since(c.at)
	busy := machineBusy() - c.busy
	self := selfCPU() - c.procs
	cores := float64(wall) * float64(numCPU())
	if cores <= 0 {
		return name
	}
	return fmt.Sprintf("%-32s %8s wall  this process %5.1f%%  other %5.1f%%  idle %5.1f%% of %d CPUs",
		name, wall.Round(time.Millisecond), 100*float64(self)/cores, 100*float64(max(0, busy-self))/cores,
		100*(1-float64(busy)/cores), numCPU())
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy sums user, nice, system, irq, softirq and steal of
// /proc/stat's cpu line (USER_HZ = 100 on Linux).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func numCPU() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 1
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			n++
		}
	}
	return max(1, n)
}
