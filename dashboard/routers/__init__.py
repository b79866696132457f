"""One router per page, plus login and the operational endpoints."""
