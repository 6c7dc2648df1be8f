// Package sdkecho adapts the client SDK to echo, so that the SDK itself
// stays free of any web framework.
package sdkecho

import (
	"github.com/labstack/echo/v4"

	sdk "github.com/switchyard/switchyard/client-sdk"
)

// Middleware is the instance's Handler as echo middleware; install it with
// e.Pre, so that the control endpoints are served before echo's router.
func Middleware(i *sdk.Instance) echo.MiddlewareFunc { return echo.WrapMiddleware(i.Handler) }
