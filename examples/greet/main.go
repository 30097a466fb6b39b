// greet is the example program of xarch's matrix.yaml: a small stdlib-only CLI.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

const version = "1.0.0"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Printf("greet %s %s/%s\n", version, runtime.GOOS, runtime.GOARCH)
		return
	}
	who := "world"
	if len(os.Args) > 1 {
		who = strings.Join(os.Args[1:], " ")
	}
	fmt.Printf("hello, %s\n", who)
}
