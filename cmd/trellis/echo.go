package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"trellis.dev/trellis/internal/demo"
)

func newEcho() *cobra.Command {
	var listen, name string
	cmd := &cobra.Command{
		Use:   "echo --listen ADDR --name NAME",
		Short: "Run a demo backend that answers every request with its name and what it received",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "echo: %q on %s\n", name, ln.Addr())
			return demo.Serve(cmd.Context(), ln, name)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8090", "address to listen on")
	cmd.Flags().StringVar(&name, "name", "echo", "backend name put in every answer")
	return cmd
}
