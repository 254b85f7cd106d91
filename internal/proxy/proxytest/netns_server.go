package proxytest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A backend server answers every HTTP request and every UDP datagram with
// one line "NAME CLIENT-IP:PORT": which backend answered, and the source
// address it saw (to check client-IP preservation). It is the test binary
// itself, started inside a pod namespace with envServe set to
// "NAME tcp=P1,P2 udp=P3".

// serve runs a backend server until killed.
func serve(spec string) error {
	fields := strings.Fields(spec)
	if len(fields) == 0 {
		return fmt.Errorf("empty spec")
	}
	name := fields[0]
	errc := make(chan error, 1)
	for _, f := range fields[1:] {
		proto, ports, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("bad spec field %q", f)
		}
		for _, p := range strings.Split(ports, ",") {
			addr := ":" + p
			switch proto {
			case "tcp":
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return err
				}
				srv := &http.Server{
					Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						fmt.Fprintf(w, "%s %s\n", name, r.RemoteAddr)
					}),
					ReadHeaderTimeout: 5 * time.Second,
				}
				go func() { errc <- srv.Serve(ln) }()
			case "udp":
				pc, err := net.ListenPacket("udp", addr)
				if err != nil {
					return err
				}
				go func() {
					buf := make([]byte, 2048)
					for {
						_, from, err := pc.ReadFrom(buf)
						if err != nil {
							errc <- err
							return
						}
						_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s\n", name, from)), from)
					}
				}()
			default:
				return fmt.Errorf("bad protocol %q", proto)
			}
		}
	}
	fmt.Println("ready")
	return <-errc
}

// StartServer starts a backend server named name inside ns, listening on
// the given TCP (HTTP) and UDP ports, and waits until it listens.
func (l *Lab) StartServer(ns *NetNS, name string, tcpPorts, udpPorts []int) {
	l.t.Helper()
	self, err := os.Executable()
	l.must(err)
	spec := name
	for _, x := range []struct {
		proto string
		ports []int
	}{{"tcp", tcpPorts}, {"udp", udpPorts}} {
		if len(x.ports) == 0 {
			continue
		}
		var s []string
		for _, p := range x.ports {
			s = append(s, strconv.Itoa(p))
		}
		spec += " " + x.proto + "=" + strings.Join(s, ",")
	}
	cmd := ns.Command(context.Background(), self)
	cmd.Env = append(os.Environ(), envServe+"="+spec)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	l.must(err)
	l.must(cmd.Start())
	l.track(cmd)
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected output %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			l.t.Fatalf("server %s in %s: %v", name, ns.Name, err)
		}
	case <-time.After(10 * time.Second):
		l.t.Fatalf("server %s in %s did not start", name, ns.Name)
	}
}

// Reply is a backend server's answer.
type Reply struct {
	Backend string // the server's name
	Client  string // the source address the server saw ("ip:port")
}

// ClientIP returns the IP part of Client.
func (r Reply) ClientIP() string {
	host, _, err := net.SplitHostPort(r.Client)
	if err != nil {
		return r.Client
	}
	return host
}

func parseReply(s string) (Reply, error) {
	name, client, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return Reply{}, fmt.Errorf("bad reply %q", s)
	}
	return Reply{Backend: name, Client: client}, nil
}

// Dial opens a connection from inside n (the socket belongs to n).
func (n *NetNS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPGet makes one HTTP request on a new connection from inside n to addr
// ("ip:port") and returns the backend's reply.
func (n *NetNS) HTTPGet(ctx context.Context, addr string) (Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return n.Dial(ctx, network, a)
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return Reply{}, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return Reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Reply{}, err
	}
	return parseReply(string(body))
}

// HTTPStatus makes one HTTP GET from inside n to url and returns the status
// code and body.
func (n *NetNS) HTTPStatus(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return n.Dial(ctx, network, a)
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// UDPClient is a connected UDP socket inside a namespace: every Exchange
// uses the same source port, hence the same conntrack entry.
type UDPClient struct {
	conn net.Conn
}

// UDPDial connects a UDP socket from inside n to addr.
func (n *NetNS) UDPDial(addr string) (*UDPClient, error) {
	c, err := n.Dial(context.Background(), "udp", addr)
	if err != nil {
		return nil, err
	}
	return &UDPClient{conn: c}, nil
}

// Exchange sends one datagram and waits up to timeout for the reply.
func (u *UDPClient) Exchange(timeout time.Duration) (Reply, error) {
	if err := u.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return Reply{}, err
	}
	if _, err := u.conn.Write([]byte("ping")); err != nil {
		return Reply{}, err
	}
	buf := make([]byte, 2048)
	n, err := u.conn.Read(buf)
	if err != nil {
		return Reply{}, err
	}
	return parseReply(string(buf[:n]))
}

// Close closes the socket.
func (u *UDPClient) Close() error { return u.conn.Close() }

// IsTimeout reports whether err is a network timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
