package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSample is a reading of where the machine's CPU time went so far.
type cpuSample struct {
	at           time.Time
	total        time.Duration // all CPUs, busy (not idle or iowait)
	server, self time.Duration
}

func sampleCPU(serverPID int) cpuSample {
	return cpuSample{at: time.Now(), total: machineBusy(), server: procCPU(serverPID), self: selfCPU()}
}

// machineBusy sums the busy fields of /proc/stat's "cpu" line: user, nice,
// system, irq, softirq and steal (steal is time the hypervisor gave to
// someone else while this VM wanted to run).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clkTck
}

// phases records the CPU split of each bench phase, so a reader can see
// whether other processes on the machine took CPU from the measurement.
type phases struct {
	serverPID int
	last      cpuSample
	t         *table
}

func newPhases(serverPID int) *phases {
	return &phases{
		serverPID: serverPID,
		last:      sampleCPU(serverPID),
		t: &table{
			title: fmt.Sprintf("0. Where the machine's CPU went during each phase (%d CPUs; other = processes outside this bench)", runtime.NumCPU()),
			head:  []string{"phase", "wall", "server CPU", "bench CPU", "other CPU", "idle"},
		},
	}
}

// done closes the phase that ran since the previous call.
func (p *phases) done(name string) {
	now := sampleCPU(p.serverPID)
	wall := now.at.Sub(p.last.at)
	avail := wall * time.Duration(runtime.NumCPU())
	srv, self := now.server-p.last.server, now.self-p.last.self
	other := max(0, (now.total-p.last.total)-srv-self)
	idle := max(0, avail-(now.total-p.last.total))
	share := func(d time.Duration) string {
		if avail <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.1fs (%.0f%%)", d.Seconds(), 100*float64(d)/float64(avail))
	}
	p.t.add(name, fmt.Sprintf("%.1fs", wall.Seconds()), share(srv), share(self), share(other), share(idle))
	p.last = now
}

// loadavg returns /proc/loadavg's first three fields.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}

// rss is one reading of the server's memory.
type rss struct {
	rss, hwm string
	err      error
}

// noRSS is a reading that was not taken.
var noRSS = rss{rss: "n/a", hwm: "n/a"}

// readRSS reads VmRSS and VmHWM of pid.
func readRSS(pid int) rss {
	if pid <= 0 {
		return rss{rss: "n/a", hwm: "n/a", err: fmt.Errorf("no -server-pid given")}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rss{rss: "n/a", hwm: "n/a", err: fmt.Errorf("read server status: %w", err)}
	}
	r := rss{rss: "n/a", hwm: "n/a"}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			r.rss = fmt.Sprintf("%.0f MiB", float64(kb)/1024)
		case "VmHWM:":
			r.hwm = fmt.Sprintf("%.0f MiB", float64(kb)/1024)
		}
	}
	return r
}

// clkTck is USER_HZ, the unit of /proc CPU times: 100 on every Linux
// architecture Go supports.
const clkTck = 100

// procCPU returns the user+system CPU time pid has used so far, or 0.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15 (proc(5)).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / clkTck
}

// perOpDur returns cpu/n, or 0 when either is zero.
func perOpDur(cpu time.Duration, n int) time.Duration {
	if cpu <= 0 || n == 0 {
		return 0
	}
	return cpu / time.Duration(n)
}

// perOp formats cpu/n in microseconds, or "n/a".
func perOp(cpu time.Duration, n int) string { return us(perOpDur(cpu, n)) }

// us formats d in microseconds, or "n/a" for 0.
func us(d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%d us", d.Microseconds())
}

// selfCPU returns this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
