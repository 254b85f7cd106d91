package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/svcnet/svcnet/internal/agnhost"
)

// newAgnhostCommand is `svcnet agnhost`, the built-in stand-in for the
// upstream agnhost test image. Subcommands, flags, outputs and exit codes
// follow upstream so that test manifests run unchanged.
func newAgnhostCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agnhost",
		Short: "Test backend compatible with the upstream agnhost image",
		Long: `agnhost runs the test servers of the upstream agnhost image that the
Kubernetes Service and networking e2e tests use: netexec, serve-hostname,
porter, connect and pause.`,
	}
	// Upstream accepts klog's flags (tests pass some); accept and ignore them.
	pf := cmd.PersistentFlags()
	pf.Int("v", 0, "log verbosity (accepted for compatibility; ignored)")
	pf.String("vmodule", "", "ignored")
	pf.Bool("logtostderr", true, "ignored")
	pf.Bool("alsologtostderr", false, "ignored")
	for _, name := range []string{"v", "vmodule", "logtostderr", "alsologtostderr"} {
		_ = pf.MarkHidden(name)
	}
	cmd.AddCommand(newAgnhostNetexecCommand(), newAgnhostServeHostnameCommand(),
		newAgnhostPorterCommand(), newAgnhostConnectCommand(), newAgnhostPauseCommand())
	return cmd
}

// exitWith ends the process with code unless it is 0: upstream's exit
// codes matter (pause: 1 or 2; netexec: /exit's code) and cobra only knows
// success and failure.
func exitWith(code int) error {
	if code != 0 {
		os.Exit(code)
	}
	return nil
}

func newAgnhostNetexecCommand() *cobra.Command {
	cfg := agnhost.DefaultNetexecConfig()
	var delaySeconds int
	var udpAddrs string
	cmd := &cobra.Command{
		Use:   "netexec",
		Short: "HTTP(S), UDP and (optionally) SCTP servers with test endpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger("info")
			if err != nil {
				return err
			}
			cfg.Logger = logger
			cfg.DelayShutdown = time.Duration(delaySeconds) * time.Second
			if udpAddrs != "" {
				cfg.UDPListenAddresses = splitComma(udpAddrs)
			}
			// SIGTERM starts the delayed shutdown; SIGINT keeps its default
			// (kill), as upstream only handles SIGTERM.
			term := make(chan os.Signal, 1)
			signal.Notify(term, syscall.SIGTERM)
			defer signal.Stop(term)
			n, err := agnhost.StartNetexec(context.Background(), cfg)
			if err != nil {
				return err
			}
			go func() {
				<-term
				n.Terminate()
			}()
			code, err := n.Wait()
			if err != nil {
				return err
			}
			return exitWith(code)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.HTTPPort, "http-port", cfg.HTTPPort, "HTTP Listen Port")
	f.IntVar(&cfg.UDPPort, "udp-port", cfg.UDPPort, "UDP Listen Port (-1: no UDP server)")
	f.IntVar(&cfg.SCTPPort, "sctp-port", cfg.SCTPPort, "SCTP Listen Port (-1: no SCTP server)")
	f.StringVar(&udpAddrs, "udp-listen-addresses", "", "A comma separated list of ip addresses the udp servers listen from")
	f.IntVar(&delaySeconds, "delay-shutdown", 0, "Number of seconds to delay shutdown when receiving SIGTERM.")
	f.StringVar(&cfg.HTTPOverride, "http-override", "", "Override the HTTP handler to always respond as if it were a GET with this path & params")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "File containing an x509 certificate for HTTPS")
	f.StringVar(&cfg.TLSKeyFile, "tls-private-key-file", "", "File containing an x509 private key matching --tls-cert-file")
	return cmd
}

func newAgnhostServeHostnameCommand() *cobra.Command {
	cfg := agnhost.DefaultServeHostnameConfig()
	cmd := &cobra.Command{
		Use:   "serve-hostname",
		Short: "Serves the hostname over HTTP, or raw over TCP and/or UDP",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger("info")
			if err != nil {
				return err
			}
			cfg.Logger = logger
			term := make(chan os.Signal, 1)
			signal.Notify(term, syscall.SIGTERM)
			defer signal.Stop(term)
			return agnhost.RunServeHostname(context.Background(), cfg, term)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&cfg.TCP, "tcp", false, "Serve raw over TCP.")
	f.BoolVar(&cfg.UDP, "udp", false, "Serve raw over UDP.")
	f.BoolVar(&cfg.HTTP, "http", true, "Serve HTTP.")
	f.BoolVar(&cfg.Close, "close", false, "Close connection per each HTTP request.")
	f.IntVar(&cfg.Port, "port", cfg.Port, "Port number.")
	return cmd
}

func newAgnhostPorterCommand() *cobra.Command {
	var cfg agnhost.PorterConfig
	cmd := &cobra.Command{
		Use:   "porter",
		Short: "Serves the values of SERVE_{PORT,TCP_PORT,UDP_PORT,TLS_PORT,SCTP_PORT}_<N> on port N",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger("info")
			if err != nil {
				return err
			}
			cfg.Logger = logger
			cfg.Env = os.Environ()
			ctx, stop := signalContext()
			defer stop()
			p, err := agnhost.StartPorter(ctx, cfg)
			if err != nil {
				return err
			}
			<-ctx.Done()
			return p.Close()
		},
	}
	cmd.Flags().BoolVar(&cfg.JSONResponse, "json-response", false, "Responds to requests with a json response that includes the default value with the http.Request Method")
	return cmd
}

func newAgnhostConnectCommand() *cobra.Command {
	var (
		o                 agnhost.ConnectOptions
		udpData, sctpData string
	)
	cmd := &cobra.Command{
		Use:   "connect host:port",
		Short: "Attempts a TCP, UDP or SCTP connection; failures print UNKNOWN, TIMEOUT, DNS, REFUSED or OTHER",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Address = args[0]
			o.Data = udpData
			if o.Protocol == "sctp" {
				o.Data = sctpData
			}
			if err := agnhost.Connect(context.Background(), o); err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return exitWith(1)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Timeout, "timeout", 0, "Maximum time before returning an error")
	f.StringVar(&o.Protocol, "protocol", "tcp", "The protocol to use to perform the connection, can be tcp, udp or sctp")
	f.StringVar(&udpData, "udp-data", "hostname", "The UDP payload send to the server")
	f.StringVar(&sctpData, "sctp-data", "hostname", "The SCTP payload send to the server")
	return cmd
}

func newAgnhostPauseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "pause",
		Short: "Blocks until SIGINT (exit 1) or SIGTERM (exit 2)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			return exitWith(agnhost.Pause(cmd.OutOrStdout(), sigs, os.Getenv("TERMINATION_MESSAGE_PATH")))
		},
	}
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
