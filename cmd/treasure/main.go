// Command treasure is the single binary of the treasure backend.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "treasure: not yet wired")
	os.Exit(2)
}
