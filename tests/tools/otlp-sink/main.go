// otlp-sink: a real OTLP receiver for the tests. The OpenTelemetry Collector's own otlpreceiver
// (go.opentelemetry.io/collector/receiver/otlpreceiver, the version of go.mod) listens for OTLP over
// HTTP (protobuf and JSON, /v1/traces) and optionally gRPC, and hands each batch of spans it
// accepted to a consumer that writes it as one line of OTLP JSON (ptrace.JSONMarshaler), the
// encoding of the OTLP/JSON spec, to stdout.
//
//	otlp-sink --http 127.0.0.1:4318 [--grpc 127.0.0.1:4317]
//	otlp-sink --version
//
// Prints {"msg":"listening","http":"<addr>"} to stderr once it accepts requests; stops on SIGTERM
// or SIGINT. Built by tests/tools/ensure-test-tools.mjs into TOOLS_BIN.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configgrpc"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
)

// version names this program's revision and the receiver it is built on; test-tools.mjs checks it.
const version = "otlp-sink 1 (otlpreceiver v0.165.0)"

func main() {
	httpAddr := flag.String("http", "127.0.0.1:4318", "address of the OTLP/HTTP receiver")
	grpcAddr := flag.String("grpc", "", "address of the OTLP/gRPC receiver (none when empty)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	if err := run(*httpAddr, *grpcAddr); err != nil {
		fmt.Fprintf(os.Stderr, "{\"msg\":\"failed\",\"error\":%q}\n", err.Error())
		os.Exit(1)
	}
}

func run(httpAddr, grpcAddr string) error {
	factory := otlpreceiver.NewFactory()
	cfg := factory.CreateDefaultConfig().(*otlpreceiver.Config)
	cfg.Protocols.HTTP.GetOrInsertDefault().ServerConfig.NetAddr.Endpoint = httpAddr
	if grpcAddr != "" {
		cfg.Protocols.GRPC.GetOrInsertDefault().NetAddr.Endpoint = grpcAddr
	} else {
		cfg.Protocols.GRPC = configoptional.None[configgrpc.ServerConfig]()
	}

	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	marshaler := &ptrace.JSONMarshaler{}
	sink, err := consumer.NewTraces(func(_ context.Context, td ptrace.Traces) error {
		line, err := marshaler.MarshalTraces(td)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		out.Write(line)
		out.WriteByte('\n')
		return out.Flush()
	})
	if err != nil {
		return err
	}

	ctx := context.Background()
	receiver, err := factory.CreateTraces(ctx, receivertest.NewNopSettings(factory.Type()), cfg, sink)
	if err != nil {
		return err
	}
	if err := receiver.Start(ctx, componenttest.NewNopHost()); err != nil {
		return err
	}
	ready, _ := json.Marshal(map[string]string{"msg": "listening", "http": httpAddr, "grpc": grpcAddr})
	fmt.Fprintln(os.Stderr, string(ready))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	return receiver.Shutdown(ctx)
}
