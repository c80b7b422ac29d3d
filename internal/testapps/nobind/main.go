// Command nobind is a test application that runs but never creates its
// socket.
package main

import (
	"fmt"
	"time"
)

func main() {
	fmt.Println("nobind: started, but will never listen")
	for {
		time.Sleep(time.Hour)
	}
}
