package demo

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlerNamesBackendAndEchoesRequest(t *testing.T) {
	srv := httptest.NewServer(Handler("inventory-ver1"))
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/orders/7?x=1", nil)
	req.Host = "inventory.example.com"
	req.Header.Set("X-Env", "beta")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Reply
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Backend != "inventory-ver1" || got.Method != "POST" || got.Host != "inventory.example.com" ||
		got.Path != "/orders/7" || got.Query != "x=1" || got.Headers["X-Env"][0] != "beta" {
		t.Errorf("reply = %+v", got)
	}
	if h := resp.Header.Get("X-Trellis-Demo-Backend"); h != "inventory-ver1" {
		t.Errorf("X-Trellis-Demo-Backend = %q", h)
	}
}
