// Entry of the chart pages: the page's API URL is in data-api.
import { createPage } from "./dashboard.js";

const root = document.getElementById("page");
createPage(root, root.dataset.api).load();
